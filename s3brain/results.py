"""The ``results.json`` every run writes, read by the comparison tools.

Example
-------
>>> import json, tempfile, os
>>> with tempfile.TemporaryDirectory() as d:
...     path = os.path.join(d, "results.json")
...     _ = update_results(path, strategy="weight_ft")
...     _ = update_results(path, wer_test_clean=12.5)
...     data = json.load(open(path))
>>> data["strategy"], data["wer_test_clean"], data["wer_test_other"]
('weight_ft', 12.5, None)
"""

import json
import os
from pathlib import Path

RESULT_KEYS = (
    "strategy", "ssl_hub", "ssl_init", "train_split", "wer_test_clean", "wer_test_other",
    "cer_test_clean", "cer_test_other", "wer_test_clean_lm", "wer_test_other_lm",
    "sparsity", "sparsity_linear", "params_total", "params_transformer",
    "params_trainable", "flops_10s", "latency_ms_10s", "rtf", "onnx_latency_ms_10s",
    "peak_memory_mb_10s", "train_seconds",
    "storage_bytes_per_task", "storage_share_of_backbone", "backbone_bytes",
)


def update_results(path, **values):
    """Merge ``values`` into the results file at ``path`` (every known key present, null if unset)."""
    path = Path(path)
    data = {key: None for key in RESULT_KEYS}
    if path.exists():
        data.update(json.loads(path.read_text()))
    data.update(values)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return data
