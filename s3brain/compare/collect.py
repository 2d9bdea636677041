"""Collecting finished runs: their ``results.json`` (the one format of every recipe,
``s3brain.utils.results``), the primary metric each ranks by, the table row of a run, and the
rows pooled over seeds with intervals against the reference (``s3brain.compare.stats``).

Example
-------
>>> primary_metric({"primary_metric": "accuracy_test"}), primary_metric({})
('accuracy_test', 'wer_test_clean')
"""

import json
from pathlib import Path

from s3brain.compare.stats import (
    error_files,
    mean_std,
    negated,
    paired_differences,
    prediction_errors,
)

BASELINE = "weight_ft.yaml"
#: The fair dense reference of the yamls that start from ``BASELINE``'s run: its weights trained
#: for the same extra epochs, with the same rates and schedule, without the strategy.
CONTINUED = "weight_ft_continued.yaml"
#: The script and yaml (in the recipe) that train a SALAD detector, for yamls that need one.
DETECTOR = ("train_salad.py", "salad/detector.yaml")
#: The columns of results written before ``metric_keys`` existed (LibriSpeech's).
COLUMNS = ["name", "status", "strategy", "train_split", "sparsity", "kept_share_test_clean",
           "mean_exit_block_test_clean", "wer_test_clean",
           "wer_test_other", "wer_test_clean_lm", "wer_test_other_lm", "params_total",
           "params_trainable", "flops_10s", "latency_ms_10s", "rtf", "onnx_latency_ms_10s",
           "peak_memory_mb_10s", "storage_bytes_per_task", "train_seconds"]
#: Result keys that describe where a run was trained (shown when the runs have them).
WHERE = ("task", "language", "train_split")


def primary_metric(results):
    """The metric a run is ranked and plotted by (its ``primary_metric``; WER on test-clean for
    results written before the key existed).

    Arguments
    ---------
    results : dict
        A run's ``results.json``.

    Returns
    -------
    str

    Example
    -------
    >>> primary_metric({"primary_metric": "accuracy_test"}), primary_metric({})
    ('accuracy_test', 'wer_test_clean')
    """
    return results.get("primary_metric") or "wer_test_clean"


def finished_results(folder):
    """The run's results.json if it finished (its primary test metric present), else None.

    Arguments
    ---------
    folder : str or Path
        The run's output folder.

    Returns
    -------
    dict or None
    """
    path = Path(folder) / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    return results if results.get(primary_metric(results)) is not None else None


def row_for(name, results, status):
    """One table row: a run's results, with its name and status.

    Arguments
    ---------
    name : str
        The strategy's name (its yaml's stem).
    results : dict or None
        The run's ``results.json``; None for a run that failed.
    status : str
        ``ok``, ``ok (reused)`` or why the run failed.

    Returns
    -------
    row : dict
        The results' keys, and every key of ``COLUMNS`` (None where the results lack it).

    Example
    -------
    >>> row = row_for("s3router", {"wer_test_clean": 75.5, "accuracy_test": 1}, "ok")
    >>> row["name"], row["wer_test_clean"], row["flops_10s"], row["accuracy_test"]
    ('s3router', 75.5, None, 1)
    """
    row = {key: None for key in COLUMNS}
    row.update(results or {})
    row.update(name=name, status=status)
    return row


def detector_results(folder):
    """A detector run's results.json if it finished (its detector file written too), else None."""
    path = Path(folder) / "results.json"
    if not (path.is_file() and (Path(folder) / "salad_detector.pt").is_file()):
        return None
    return json.loads(path.read_text())


def pooled_over_seeds(per_seed, out, reference=BASELINE, splits=None, folder_of=None):
    """One row per strategy from its runs over several seeds.

    Arguments
    ---------
    per_seed : dict
        ``{seed: rows}`` as ``compare`` returns them for each seed (same strategies).
    out : Path
        The comparison folder: seed ``s``'s run of strategy ``name`` is ``out/seed<s>/<name>``,
        holding its per-utterance error files (``wer_<split>.txt``, ``per_test.txt``).
    reference : str or dict
        The yaml (or its stem) every row is compared with, or ``{name: reference}`` per row
        (``BASELINE`` for a name it lacks; ``fair_reference``).
    splits : tuple of str, optional
        Test splits to compare (default: every split with an error file in the reference run,
        the LM decoding's too: ``lm_test-clean`` gives ``d_wer_lm_test_clean``).
    folder_of : callable, optional
        ``(seed, name) -> folder`` of a run, for another layout than ``out/seed<s>/<name>``
        (the sweeps keep the yamls' own seed in the folder a run without seeds has).

    Returns
    -------
    list of dict
        Numeric columns: the mean over the seeds that finished, with ``<column>_std``;
        ``status``: how many seeds finished; ``d_<metric>_<split>`` (``d_wer_test_clean``): the
        paired bootstrap interval of the error-rate difference against the reference (None for
        the reference itself; absent for tasks without per-utterance error files);
        ``s_<metric>_<split>``: the t interval of the same difference from each seed's value
        (``seed_interval``, two seeds or more: training noise counted); ``reference``: the row
        it is compared with. A classifier's (primary metric ``accuracy_<split>``) are
        ``d_accuracy_<split>`` and ``s_accuracy_<split>``, the accuracy difference in points
        from its ``predictions_<split>.csv``.
    """

    seeds = list(per_seed)
    references = {Path(k).stem: Path(v).stem for k, v in reference.items()} \
        if isinstance(reference, dict) else {}
    default = Path(BASELINE if isinstance(reference, dict) else reference).stem
    if folder_of is None:
        def folder_of(seed, name):
            """``out/seed<s>/<name>``: where ``compare_seeds`` puts a run."""
            return Path(out) / f"seed{seed}" / name
    rows = []
    for index, first in enumerate(per_seed[seeds[0]]):
        name = first["name"]
        runs = [per_seed[s][index] for s in seeds]
        ok = [(s, r) for s, r in zip(seeds, runs) if r["status"].startswith("ok")]
        row = {key: first.get(key) for key in ("name", "strategy", "primary_metric",
                                               "metric_keys", "cost_seconds", *WHERE)}
        row["status"] = f"{len(ok)}/{len(seeds)} seeds ok"
        for key in dict.fromkeys(k for _, r in ok for k in r):
            values = [r[key] for _, r in ok if isinstance(r.get(key), (int, float))
                      and not isinstance(r.get(key), bool)]
            if key not in row and values and len(values) == len(ok):
                row[key], row[f"{key}_std"] = mean_std(values)
        metric = primary_metric(first)
        prefix = metric.split("_")[0]
        reference = references.get(name, default)
        row["reference"] = reference if name != reference else None
        seed0 = folder_of(seeds[0], reference)
        if prefix == "accuracy":  # a classifier: from predictions_<split>.csv, accuracy points
            split = metric[len("accuracy_"):]
            files = [(folder_of(s, reference) / f"predictions_{split}.csv",
                      folder_of(s, name) / f"predictions_{split}.csv") for s, _ in ok]
            result = paired_differences(files, read=prediction_errors) \
                if name != reference else None
            row[f"d_{metric}"], row[f"s_{metric}"] = (
                (negated(result["bootstrap"]), negated(result["seeds"])) if result
                else (None, None))
        error_splits = [] if prefix == "accuracy" else splits or error_files(seed0, metric,
                                                                               lm=True)
        for split in error_splits:
            tag = f"{prefix}_{split.replace('-', '_')}"
            row[f"d_{tag}"] = row[f"s_{tag}"] = None
            files = [(folder_of(s, reference) / f"{prefix}_{split}.txt",
                      folder_of(s, name) / f"{prefix}_{split}.txt") for s, _ in ok]
            result = paired_differences(files) if name != reference else None
            if result:
                row[f"d_{tag}"], row[f"s_{tag}"] = result["bootstrap"], result["seeds"]
        rows.append(row)
    return rows



