"""What every run reports, whatever its task: the cost of the deployed model and the one
``results.json`` format that ``python -m s3brain.compare`` reads.

- ``cost_report``: parameters, FLOPs (attention included), CPU latency, real-time factor, peak
  memory and onnxruntime latency of the model that serves one task, measured on a CPU copy made
  deployable by the strategies (masks folded, structured pruning shrunk, frames dropped);
- ``split_results``: a test pass's statistics as result keys (``wer_test_clean``,
  ``wer_test_clean_lm``, ``mean_exit_block_test_clean``, ``accuracy_test``...);
- ``write_results``: the run's accuracy, cost, sparsity and storage per task in
  ``results.json``, with ``primary_metric`` (the metric a comparison ranks and plots),
  ``higher_is_better`` and ``metric_keys`` (every accuracy key, in table order), so one reader
  serves LibriSpeech, CommonVoice and the SUPERB tasks; and a printed summary.

Example
-------
>>> split_results({"loss": 2.0, "WER": 81.234, "WER_LM": 60.0, "exit_block": 2.5}, "test-clean")
{'wer_test_clean': 81.23, 'wer_test_clean_lm': 60.0, 'mean_exit_block_test_clean': 2.5}
"""

import copy
import logging
from pathlib import Path

import torch
from speechbrain.utils.distributed import if_main_process
from torch import nn

from s3brain.audio import backbone_rate
from s3brain.efficiency import count_parameters, measure_cost, onnx_latency_ms, peak_memory_mb
from s3brain.experiment import unwrapped
from s3brain.masks import weight_sparsity
from s3brain.results import update_results
from s3brain.strategies import deployable, run_sparsity, task_payload

logger = logging.getLogger(__name__)

#: Statistic name -> (result-key prefix, decimals); others: lower-cased name, 2 decimals.
_STAT_KEYS = {"exit_block": ("mean_exit_block", 3), "exit_rtf": ("exit_rtf", 5),
              "kept_share": ("kept_share", None)}


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
    tag = split.replace("-", "_")
    out = {}
    for name, value in stats.items():
        if name == "loss" or value is None:
            continue
        prefix, decimals = _STAT_KEYS.get(name, (name.lower(), 2))
        if prefix.endswith("_lm"):
            key = f"{prefix[:-3]}_{tag}_lm"
        else:
            key = f"{prefix}_{tag}"
        out[key] = round(float(value), decimals) if decimals is not None else value
    return out


def _deployed_forward(ssl, head, hf, all_layers):
    """The deployed model's path on a raw waveform, written so that it traces to ONNX with any
    length (the wrapper's steps by hand: normalisation, transformers forward, output norm)."""

    def forward(wav):
        """Head outputs of the deployed model."""
        if hasattr(ssl, "before"):  # e.g. input downsampling
            wav = ssl.before(wav)
        if ssl.normalize_wav:
            wav = (wav - wav.mean(1, keepdim=True)) / torch.sqrt(
                wav.var(1, unbiased=False, keepdim=True) + 1e-5)
        feats = hf(wav).last_hidden_state
        if ssl.output_norm:
            feats = torch.nn.functional.layer_norm(feats, feats.shape[1:])
        if hasattr(ssl, "after"):
            feats = ssl.after(feats)
        return head(feats)

    return None if all_layers else forward


def cost_report(ssl, head, strategies=(), seconds=10, repeats=3, threads=1, all_layers=False,
                extra=()):
    """Parameters, FLOPs, latency, real-time factor, peak memory and onnxruntime latency of the
    model that serves one task, on ``seconds`` of audio, measured on a CPU copy made deployable
    by the strategies (what would be deployed), whatever device trained the model.

    Arguments
    ---------
    ssl : torch.nn.Module
        The backbone wrapper (``hparams["ssl"]``), possibly DDP-wrapped.
    head : torch.nn.Module
        What follows the backbone (a ``Sequential`` of the head and the output layer): reads the
        last block's output, or every hidden layer ``[L, B, T, D]`` with ``all_layers``.
    strategies : list of Strategy
        The run's strategies.
    seconds : float
        Audio length of the measurement.
    repeats : int
        Timed repeats (the median is kept).
    threads : int
        CPU threads for the timing.
    all_layers : bool
        Whether the head reads every hidden layer (SUPERB's weighted sum).
    extra : sequence of torch.nn.Module
        The strategies' extra modules (adapters, exit heads), counted in parameters and
        storage.

    Returns
    -------
    dict or None
        None off the main process; else ``params_total``, ``params_transformer``, ``params_trainable``, ``flops_<s>s``,
        ``latency_ms_<s>s``, ``rtf``, ``latency_threads``, ``peak_memory_mb_<s>s``,
        ``onnx_latency_ms_<s>s``, ``backbone_bytes`` (before shrinking), ``sparsity_linear``,
        ``storage_bytes_per_task`` (a whole model) and ``cost_seconds``.
    """
    if not if_main_process():  # measured once, by the process that writes the results
        return None
    live = {"ssl": unwrapped(ssl), "head": unwrapped(head), "extra": [unwrapped(m) for m in extra]}
    trainable = count_parameters(nn.ModuleList([live["ssl"], live["head"], *live["extra"]]),
                                 trainable_only=True)
    # One deep copy of everything, so modules shared between entries stay shared in the copy.
    copies = copy.deepcopy(live)
    ssl, head, extra = copies["ssl"].cpu(), copies["head"].cpu(), [m.cpu() for m in copies["extra"]]
    ssl = deployable([], ssl)  # masks folded
    rate = backbone_rate(ssl)
    backbone = sum(p.numel() * p.element_size() for p in ssl.parameters())  # before shrinking
    ssl = deployable(list(strategies), ssl).cpu()
    hf = ssl.model

    def forward(wav):
        """Outputs of the deployed model (the cost measurement's forward)."""
        feats = ssl(wav, None)
        if feats.dim() == 4 and not all_layers:  # a backbone returning every block's output
            feats = feats[-1]
        return head(feats)

    modules = nn.ModuleList([ssl, head, *extra]).eval()  # inference cost: no dropout, no masking
    cost = measure_cost(forward, seconds=seconds, sample_rate=rate, repeats=repeats,
                        threads=threads)
    tag = f"{seconds:g}s"
    wav = torch.randn(1, int(seconds * rate), generator=torch.Generator().manual_seed(0)) * 0.1
    cost[f"peak_memory_mb_{tag}"] = round(peak_memory_mb(forward, wav), 1)
    cost[f"onnx_latency_ms_{tag}"] = None
    deployed = _deployed_forward(ssl, head, hf, all_layers)
    try:  # the paper's deployment path; a failed export must not lose the run's results
        if deployed is None or not getattr(ssl, "onnx_exportable", True):
            raise NotImplementedError("the export of this model's path is not written yet")
        onnx_ms, difference = onnx_latency_ms(deployed, [hf, head, *extra], wav,
                                              repeats=repeats, threads=threads)
        cost[f"onnx_latency_ms_{tag}"] = round(onnx_ms, 2)
        if difference > 1e-3:
            logger.warning("ONNX output differs from torch by %.2g", difference)
    except Exception as err:  # noqa: BLE001
        logger.warning("ONNX export or onnxruntime timing not measured: %s", err)
    return {"backbone_bytes": backbone, "sparsity_linear": round(weight_sparsity(hf), 4),
            "params_total": count_parameters(modules),
            "params_transformer": count_parameters(hf.encoder),
            "params_trainable": trainable,
            # a strategy that changes weights stores a whole model per task
            "storage_bytes_per_task": sum(p.numel() * p.element_size()
                                          for p in modules.parameters()),
            "cost_seconds": seconds, f"flops_{tag}": cost[f"flops_{tag}"],
            f"latency_ms_{tag}": cost[f"latency_ms_{tag}"], "rtf": cost["rtf"],
            "latency_threads": cost["latency_threads"],
            f"peak_memory_mb_{tag}": cost[f"peak_memory_mb_{tag}"],
            f"onnx_latency_ms_{tag}": cost[f"onnx_latency_ms_{tag}"]}


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
        The metric a comparison ranks and plots (``wer_test_clean``, ``per_test``,
        ``accuracy_test``).
    higher_is_better : bool
        Whether ``primary`` is an accuracy (True) or an error rate.
    info_keys : sequence of str
        Descriptive keys copied into a task file's metadata.

    Returns
    -------
    dict
        The results as written.
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
    lines.append(f"  storage per task {results['storage_bytes_per_task']:,} bytes "
                 f"({results['storage_share_of_backbone']:.1%} of the backbone)")
    return "\n".join(lines)
