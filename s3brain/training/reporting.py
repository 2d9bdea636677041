"""What every run reports, whatever its task: a test pass's statistics as result keys
(``split_results``), and ``write_results``: the run's accuracy, cost, sparsity and storage per
task in ``results.json`` with ``primary_metric``, ``higher_is_better`` and ``metric_keys`` (one
format for LibriSpeech, CommonVoice and SUPERB, ``s3brain.utils.results``), and a printed summary.

A test split may have any name (a user's own test set in the dataset's layout): its keys are
named after it, the primary metric follows the first test split a run is given
(``metric_key``), and a run evaluated again on other splits keeps the figures of the earlier ones
in its ``results.json``.

Example
-------
>>> split_results({"loss": 2.0, "WER": 81.234, "WER_LM": 60.0, "exit_block": 2.5}, "test-clean")
{'wer_test_clean': 81.23, 'wer_test_clean_lm': 60.0, 'mean_exit_block_test_clean': 2.5}
>>> split_results({"WER": 70.0, "WER_LM": 65.0}, "test-mine")
{'wer_test_mine': 70.0, 'wer_test_mine_lm': 65.0}
"""

import logging
from pathlib import Path

from speechbrain.utils.distributed import if_main_process

from s3brain.strategies.base import run_sparsity, task_payload
from s3brain.utils.checkpoint import unwrapped
from s3brain.utils.results import update_results

logger = logging.getLogger(__name__)


#: Statistic name -> (result-key prefix, decimals); others: lower-cased name, 2 decimals.
_STAT_KEYS = {"exit_block": ("mean_exit_block", 3), "exit_rtf": ("exit_rtf", 5),
              "kept_share": ("kept_share", None)}


def metric_key(metric, split):
    """The result key of ``metric`` on a test split: ``<metric>_<split>``, dashes of the split's
    name as underscores (``wer``, ``test-clean`` -> ``wer_test_clean``).

    Arguments
    ---------
    metric : str
        The metric's prefix (``wer``, ``per``, ``accuracy``).
    split : str
        The test split's name, as the data preparation knows it.

    Returns
    -------
    str

    Example
    -------
    >>> metric_key("wer", "test-clean"), metric_key("per", "test")
    ('wer_test_clean', 'per_test')
    """
    return f"{metric}_{split.replace('-', '_')}"


def split_results(stats, split):
    """A test pass's statistics as result keys ``<stat>_<split>`` (``_lm`` last for the LM
    decoding's error rate); the loss is left out.

    Arguments
    ---------
    stats : dict
        The pass's statistics (``WER``, ``CER``, ``WER_LM``, ``accuracy``, ``exit_block``...).
    split : str
        The test split's name (``test-clean``; dashes become underscores).

    Returns
    -------
    dict
    """
    out = {}
    for name, value in stats.items():
        if name == "loss" or value is None:
            continue
        prefix, decimals = _STAT_KEYS.get(name, (name.lower(), 2))
        if prefix.endswith("_lm"):
            key = f"{metric_key(prefix[:-3], split)}_lm"
        else:
            key = metric_key(prefix, split)
        out[key] = round(float(value), decimals) if decimals is not None else value
    return out


def write_results(results, metrics, cost, strategies, output_folder, ssl, head, primary,
                  higher_is_better=False, info_keys=("strategy", "train_split", "language", "task")):
    """Complete the run's results with its cost, sparsity and storage per task, write
    ``results.json`` in ``output_folder`` and print the summary (main process only).

    Arguments
    ---------
    results : dict
        The run's descriptive keys (``strategy``, ``train_split``, ``train_seconds``...).
    metrics : dict
        Its test metrics (``split_results``), in table order.
    cost : dict
        ``cost_report``'s figures.
    strategies : list of Strategy
        The run's strategies.
    output_folder : str or Path
        The run's folder.
    ssl : torch.nn.Module
        The trained backbone wrapper.
    head : torch.nn.Module
        The task's head (its bytes count in a task's payload).
    primary : str
        The metric a comparison ranks and plots, on the first test split the run was given
        (``wer_test_clean``, ``wer_test_mine``, ``per_test``, ``accuracy_test``).
    higher_is_better : bool
        Whether ``primary`` is an accuracy (True) or an error rate.
    info_keys : sequence of str
        Descriptive keys copied into a task file's metadata.

    Returns
    -------
    dict
        The results as written: merged into the run's earlier ``results.json``, if any, so that
        a run evaluated again on other test splits keeps the earlier splits' figures
        (``update_results``).
    """
    if primary not in metrics:
        raise ValueError(f"primary metric {primary} is not among the run's {sorted(metrics)}")
    results = {**results, **metrics, **(cost or {}), "primary_metric": primary,
               "higher_is_better": higher_is_better, "metric_keys": list(metrics)}
    if not if_main_process():
        return results
    ssl = unwrapped(ssl)
    for strategy in strategies:  # e.g. FLOPs as deployed at an early exit
        strategy.deployed_cost(results, ssl, cost["cost_seconds"])
    results["sparsity"] = run_sparsity(strategies)
    # On a shared frozen backbone a task is its payload (S3-Router: the mask file, bits + head).
    info = {k: results[k] for k in info_keys if k in results}
    payload = task_payload(strategies, Path(output_folder), ssl, head, info)
    if payload is not None:
        results["storage_bytes_per_task"] = payload
    results["storage_share_of_backbone"] = round(
        results["storage_bytes_per_task"] / results["backbone_bytes"], 4)
    results_file = Path(output_folder) / "results.json"
    results = update_results(results_file, **results)
    logger.info("Results in %s", results_file)
    print(summary(results))
    return results


def summary(results):
    """The run's accuracy and cost, as printed at the end of a run.

    Arguments
    ---------
    results : dict
        A run's results (``write_results``).

    Returns
    -------
    str

    Example
    -------
    >>> print(summary({"strategy": "weight_ft", "sparsity": 0.0, "metric_keys": ["wer_test"],
    ...     "wer_test": 80.0, "params_total": 2000, "params_trainable": 1000, "cost_seconds": 10,
    ...     "flops_10s": 3.5e9, "latency_ms_10s": 50.0, "latency_threads": 1, "rtf": 0.005,
    ...     "storage_bytes_per_task": 8000, "storage_share_of_backbone": 1.0}))
    weight_ft (sparsity 0.0)
      wer_test 80.00
      params 2,000 (trainable 1,000) | 3.50 GFLOPs / 10 s | 50 ms / 10 s on 1 thread(s), RTF 0.0050
      storage per task 8,000 bytes (100.0% of the backbone)
    """
    where = [results[k] for k in ("task", "language", "train_split") if results.get(k)]
    lines = [f"{results['strategy']}{' on ' + ', '.join(where) if where else ''} "
             f"(sparsity {results['sparsity']})"]
    shown = [k for k in results.get("metric_keys", []) if isinstance(results.get(k), float)
             and not k.startswith(("exit_rtf", "kept_share", "mean_exit"))]
    for i in range(0, len(shown), 4):
        lines.append("  " + " | ".join(f"{k} {results[k]:.2f}" for k in shown[i:i + 4]))
    tag = f"{results['cost_seconds']:g}s"
    lines.append(f"  params {results['params_total']:,} (trainable {results['params_trainable']:,})"
                 f" | {results[f'flops_{tag}'] / 1e9:.2f} GFLOPs / {results['cost_seconds']:g} s"
                 f" | {results[f'latency_ms_{tag}']:.0f} ms / {results['cost_seconds']:g} s on "
                 f"{results['latency_threads']} thread(s), RTF {results['rtf']:.4f}")
    if results.get(f"onnx_latency_ms_{tag}") is not None:
        lines.append(f"  onnxruntime {results[f'onnx_latency_ms_{tag}']:.0f} ms | peak memory "
                     f"{results[f'peak_memory_mb_{tag}']:.0f} MiB")
    if results.get(f"latency_ms_{tag}_int8") is not None:
        lines.append(f"  int8 ({results['int8_backend']}) {results[f'latency_ms_{tag}_int8']:.0f}"
                     f" ms / {results['cost_seconds']:g} s, RTF {results['rtf_int8']:.4f}")
    lines.append(f"  storage per task {results['storage_bytes_per_task']:,} bytes "
                 f"({results['storage_share_of_backbone']:.1%} of the backbone)")
    return "\n".join(lines)
