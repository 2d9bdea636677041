"""The ``results.json`` every run writes (``s3brain.training.reporting.write_results``), read by the
comparison tools.

Example
-------
>>> import json, tempfile, os
>>> with tempfile.TemporaryDirectory() as d:
...     path = os.path.join(d, "results.json")
...     _ = update_results(path, strategy="weight_ft")
...     _ = update_results(path, wer_test_clean=12.5)
...     data = json.load(open(path))
>>> data["strategy"], data["wer_test_clean"], data["sparsity"]
('weight_ft', 12.5, None)
"""

import json
import os
from pathlib import Path

#: Keys of every run, whatever its task (null until set). A task adds its metrics (named
#: ``<metric>_<split>``, listed in ``metric_keys``) and cost keys named after the measured audio
#: length (``flops_10s``, ``latency_ms_10s``: see ``cost_seconds``).
RESULT_KEYS = (
    "strategy", "ssl_hub", "ssl_init", "primary_metric", "higher_is_better", "metric_keys",
    "sparsity", "sparsity_linear", "params_total", "params_transformer", "params_trainable",
    "cost_seconds", "rtf", "latency_threads", "train_seconds",
    "storage_bytes_per_task", "storage_share_of_backbone", "backbone_bytes",
)


def update_results(path, **values):
    """Merge ``values`` into the results file at ``path`` (every known key present, null if unset).

    ``metric_keys`` is merged too: the file's keys in their order, then the new ones, so a run
    evaluated again on other test splits lists the earlier splits' metrics and the new ones.

    Arguments
    ---------
    path : str or Path
        The ``results.json``.
    **values
        The keys to set.

    Returns
    -------
    dict
        The results as written.

    Example
    -------
    >>> import json, tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "results.json")
    ...     _ = update_results(path, metric_keys=["wer_test_clean", "wer_test_other"])
    ...     update_results(path, metric_keys=["wer_test_mine", "wer_test_clean"])["metric_keys"]
    ['wer_test_clean', 'wer_test_other', 'wer_test_mine']
    """
    path = Path(path)
    data = {key: None for key in RESULT_KEYS}
    if path.exists():
        data.update(json.loads(path.read_text()))
    if values.get("metric_keys") is not None and data.get("metric_keys"):
        values["metric_keys"] = list(dict.fromkeys([*data["metric_keys"], *values["metric_keys"]]))
    data.update(values)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return data
