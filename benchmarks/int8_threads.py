#!/usr/bin/env python3
"""Why int8 gains less at two threads than at one: operator times, thread use and the split
path's hand-over, measured side by side in one run.

A wav2vec2-base sized model with random weights (timing does not depend on them), the whole
model (waveform in, last hidden state out), batch 1, exported to ONNX in float and in dynamic
int8 as the project deploys it (``s3brain.deployment.int8.OnnxInt8``), and the split path of the
ladder's "S6-DAMON int8" rung (``SplitInt8``: SAFARI-shrunk, the CNN and the transformer in two
graphs, SALAD's frame choice in torch between them). Measured at each ``--threads`` count:

- **operators**: onnxruntime's own profile (``SessionOptions.enable_profiling``) of ``--repeats``
  runs after a warm-up, the kernel time summed per operator type and per part (CNN feature
  encoder, transformer), and the share of each type's time spent in calls that used more than
  one thread (the profile's ``thread_scheduling_stats``);
- **thread use**: the unprofiled wall time of the whole model with the session options
  ``s3brain.utils.efficiency.onnx_session`` sets (intra-op threads, one inter-op thread,
  onnxruntime's defaults otherwise: sequential execution, spinning threads) and, above one
  thread, with ``session.intra_op.allow_spinning`` 0 and 1, ``ORT_SEQUENTIAL`` set explicitly,
  and ``session.dynamic_block_base`` 4 (smaller, self-balancing blocks of work per thread);
- **the split path's hand-over**: its time in the CNN session, in torch between the sessions
  (frame choice and indexing) and in the transformer session, with torch at as many threads as
  onnxruntime (as the ladder times it) or at one, and with onnxruntime's spinning off.

Wall times are medians of ``--repeats`` interleaved rounds (one call of every case per round),
as ``benchmarks/deployment_ladder.py`` times its rungs. The tables are printed from the record
(``tables``), so what is printed is what ``--record`` writes.

    ./s3env python benchmarks/int8_threads.py --repeats 5 --record benchmarks/records/int8_threads.json
    ./s3env python benchmarks/int8_threads.py --model tiny --seconds 1 --repeats 2    # a smoke run
"""

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModel, Wav2Vec2Config

from s3brain.deployment.int8 import OnnxInt8, SplitInt8
from s3brain.strategies.pruning.structured import Safari, shrink
from s3brain.strategies.token_dropping import SaladDetector, uniform_keep
from s3brain.utils.provenance import machine_facts, portable_argv, portable_path

REPO = Path(__file__).resolve().parents[1]

#: ``--model``: wav2vec2-base's size, or a tiny one for smoke runs and tests.
CONFIGS = {
    "base": {},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "conv_dim": (32,) * 3, "conv_kernel": (10, 3, 3),
             "conv_stride": (5, 2, 2), "num_feat_extract_layers": 3},
}

#: Operator types of onnxruntime's dynamic int8 (after its graph fusions) and of static int8:
#: the integer kernels and the quantization around them. Every other type runs in float.
INTEGER_OPS = frozenset({
    "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger",
    "ConvInteger", "QLinearConv", "QLinearMatMul", "QGemm", "QuantizeLinear", "DequantizeLinear",
    "DynamicQuantizeLSTM"})

#: The operator types the summary names one by one, when the profile has them.
KEY_OPS = ("DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
           "MatMulInteger", "ConvInteger", "Conv")

DEFAULT = "as onnx_session"

#: Session options tried above one thread: onnxruntime session config entries, and
#: ``execution_mode`` where a variant sets it.
VARIANTS = {
    DEFAULT: {},
    "allow_spinning 0": {"session.intra_op.allow_spinning": "0"},
    "allow_spinning 1": {"session.intra_op.allow_spinning": "1"},
    "ORT_SEQUENTIAL set": {"execution_mode": "sequential"},
    "dynamic_block_base 4": {"session.dynamic_block_base": "4"},
}

#: The split path's cases above one thread: (torch threads: "same" or 1, session options).
SPLIT_CASES = (("same", DEFAULT), (1, DEFAULT), ("same", "allow_spinning 0"),
               (1, "allow_spinning 0"), ("same", "dynamic_block_base 4"))


def session(model, threads, variant=DEFAULT, profile=None):
    """An onnxruntime CPU session as ``s3brain.utils.efficiency.onnx_session`` makes it
    (``threads`` intra-op threads, one inter-op thread), with a variant's options on top.

    Arguments
    ---------
    model : bytes
        The ONNX model.
    threads : int
        Intra-op threads.
    variant : str
        A key of ``VARIANTS``.
    profile : str or Path, optional
        Profile every run, into files starting with this prefix.

    Returns
    -------
    onnxruntime.InferenceSession
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    for key, value in VARIANTS[variant].items():
        if key == "execution_mode":
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        else:
            options.add_session_config_entry(key, value)
    if profile is not None:
        options.enable_profiling, options.profile_file_prefix = True, str(profile)
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def session_defaults():
    """What ``onnx_session`` leaves to onnxruntime: its defaults, read from a fresh
    ``SessionOptions``.

    Returns
    -------
    dict
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    try:
        spinning = options.get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # not set: onnxruntime's default, spinning on
        spinning = "unset (onnxruntime's default: 1)"
    return {"intra_op_num_threads": "threads", "inter_op_num_threads": 1,
            "execution_mode": str(options.execution_mode).split(".")[-1],
            "graph_optimization_level": str(options.graph_optimization_level).split(".")[-1],
            "allow_spinning": spinning}


def part_of(node_name):
    """``CNN`` for a node of the CNN feature encoder, ``transformer`` for the rest."""
    return "CNN" if "/feature_extractor/" in node_name else "transformer"


def op_times(events, warmup=1):
    """Kernel time per operator type in onnxruntime's profile ``events`` (its JSON trace), the
    mean over the runs after the first ``warmup`` ones.

    Arguments
    ---------
    events : list of dict
        The trace: ``Session`` events (one ``model_run`` per run) and ``Node`` events (one
        ``<node>_kernel_time`` per kernel call, with ``dur`` in microseconds and
        ``args.op_name``).
    warmup : int
        Runs left out, the first ones.

    Returns
    -------
    dict
        ``ops``: ``{op type: {"ms", "calls", "multi_thread_ms"}}`` per run (``multi_thread_ms``:
        the time of the calls in which another thread of the pool ran a task, from the
        cumulative ``num_run`` of the pool's other threads in ``thread_scheduling_stats``);
        ``parts``: ``{part: ms}`` (``part_of``); ``node_ms``: all kernels' time per run;
        ``run_ms``: the mean ``model_run`` time; ``runs``: how many runs were averaged.

    Example
    -------
    >>> run = {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100}
    >>> node = lambda op, ts, dur: {"cat": "Node", "name": f"/{op}_kernel_time", "ts": ts,
    ...                             "dur": dur, "args": {"op_name": op}}
    >>> later = dict(run, ts=200)
    >>> times = op_times([run, node("Conv", 1, 50), later, node("Conv", 201, 30),
    ...                   node("Gelu", 240, 10)])
    >>> times["ops"]["Conv"], times["node_ms"], times["run_ms"]
    ({'ms': 0.03, 'calls': 1.0, 'multi_thread_ms': 0.0}, 0.04, 0.1)
    """
    runs = sorted((e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"),
                  key=lambda e: e["ts"])[warmup:]
    if not runs:
        raise ValueError(f"the profile has no model_run after the {warmup} warm-up run(s)")
    nodes = sorted((e for e in events if e.get("cat") == "Node"
                    and e["name"].endswith("_kernel_time")), key=lambda e: e["ts"])
    # The pool's other threads count the tasks they ran since the session began: a call used
    # them if their count grew during it.
    helped, before = {}, 0
    for event in nodes:
        stats = event["args"].get("thread_scheduling_stats") or {}  # "" at one thread
        count = sum(s.get("num_run", 0) for s in stats.get("sub_threads", {}).values())
        helped[id(event)], before = count > before, max(before, count)
    ops, parts = {}, {}
    for run in runs:
        for event in nodes:
            if not run["ts"] <= event["ts"] <= run["ts"] + run["dur"]:
                continue
            ms = event["dur"] / 1000
            row = ops.setdefault(event["args"]["op_name"],
                                 {"ms": 0.0, "calls": 0.0, "multi_thread_ms": 0.0})
            row["ms"] += ms
            row["calls"] += 1
            row["multi_thread_ms"] += ms if helped[id(event)] else 0.0
            part = part_of(event["name"])
            parts[part] = parts.get(part, 0.0) + ms
    mean = len(runs)
    ops = {op: {key: round(value / mean, 4) for key, value in row.items()}
           for op, row in ops.items()}
    return {"ops": ops, "parts": {k: round(v / mean, 4) for k, v in parts.items()},
            "node_ms": round(sum(row["ms"] for row in ops.values()), 4),
            "run_ms": round(sum(r["dur"] for r in runs) / 1000 / mean, 4), "runs": mean}


def profile(model, wav, threads, repeats, folder):
    """``op_times`` of ``repeats`` profiled runs (after one warm-up) of the ONNX ``model``.

    Arguments
    ---------
    model : bytes
        The ONNX model.
    wav : torch.Tensor
        The input.
    threads : int
        Intra-op threads.
    repeats : int
        Runs averaged.
    folder : Path
        Where the profile is written (and read back).

    Returns
    -------
    dict
        As ``op_times``.
    """
    runner = session(model, threads, profile=folder / f"profile_{threads}t")
    feed = {"wav": wav.numpy()}
    for _ in range(1 + repeats):
        runner.run(None, feed)
    path = Path(runner.end_profiling())
    events = json.loads(path.read_text())
    path.unlink()
    return op_times(events, warmup=1)


def build(config, seconds, sparsity, kept_share, folder):
    """The models measured: the whole model's float and int8 ONNX files, and the split path.

    Arguments
    ---------
    config : dict
        ``Wav2Vec2Config`` arguments (``CONFIGS``).
    seconds : float
        Audio length.
    sparsity, kept_share : float
        SAFARI's sparsity and the share of CNN frames SALAD keeps, for the split path.
    folder : Path
        Where the ONNX files are written.

    Returns
    -------
    dict
        ``wav``, ``models`` (``{"fp32": bytes, "int8": bytes}``), ``split`` (a ``SplitInt8``
        whose ``keep_fn`` runs the detector, then keeps ``kept_share`` of the frames) and
        ``frames`` (the CNN frames of ``wav``).
    """
    torch.manual_seed(0)
    dense = AutoModel.from_config(Wav2Vec2Config(**config)).eval()
    wav = torch.randn(1, int(seconds * 16000)) * 0.1
    safari = copy.deepcopy(dense)
    Safari(sparsity).setup(safari)
    shrink(safari)
    safari.eval()
    # the ladder's detector: the paper's size for base (4 layers, 128 channels)
    detector = SaladDetector(dense.config.conv_dim[-1], channels=128).eval()

    def keep(features, lengths):
        """The detector's cost, then a uniform choice of ``kept_share`` of the frames."""
        detector(features)
        return uniform_keep(lengths, features.shape[1], 1.0 - kept_share)

    with torch.no_grad():
        int8 = OnnxInt8.export(lambda w: dense(w).last_hidden_state, [dense], wav,
                               folder / "whole")
        split = SplitInt8.export(safari, None, wav, folder / "split", keep_fn=keep)
        frames = split.features(wav).shape[1]
    return {"wav": wav, "models": {"fp32": (folder / "whole" / "model.onnx").read_bytes(),
                                   "int8": int8.model},
            "split": split, "frames": frames}


def wall_times(models, wav, threads, repeats):
    """Median unprofiled wall time (ms) of each model at each thread count, with ``DEFAULT``
    options at one thread and every ``VARIANTS`` entry above, timed in interleaved rounds.

    Returns
    -------
    list of dict
        ``{"model", "threads", "options", "ms"}``.
    """
    cases = [(name, t, variant) for name in models for t in threads
             for variant in (VARIANTS if t > 1 else [DEFAULT])]
    sessions = {case: session(models[case[0]], case[1], case[2]) for case in cases}
    feed = {"wav": wav.numpy()}
    for runner in sessions.values():  # warm-up
        runner.run(None, feed)
    times = {case: [] for case in cases}
    for _ in range(repeats):
        for case, runner in sessions.items():
            start = time.perf_counter()
            runner.run(None, feed)
            times[case].append(1000 * (time.perf_counter() - start))
    return [{"model": name, "threads": t, "options": variant,
             "ms": round(statistics.median(times[(name, t, variant)]), 3)}
            for name, t, variant in cases]


def with_sessions(split, threads, variant):
    """A copy of ``split`` whose two sessions have ``threads`` and the ``variant``'s options.

    Returns
    -------
    SplitInt8
    """
    other = copy.copy(split)
    other.cnn, other.threads = session(split.cnn_model, threads, variant), threads
    other.encoder = copy.copy(split.encoder)
    other.encoder.session = session(split.encoder.model, threads, variant)
    other.encoder.threads = threads
    return other


def timed_split(split, wav):
    """``split(wav)``, the same steps as ``SplitInt8.__call__``, timed apart.

    Returns
    -------
    torch.Tensor
        The output.
    tuple of float
        ms in the CNN session, in torch between the sessions (frame choice, indexing) and in
        the transformer session (each with its tensor hand-over to and from numpy).
    """
    start = time.perf_counter()
    features = split.features(wav)
    cnn_done = time.perf_counter()
    if split.keep_fn is not None:
        with torch.no_grad():
            keep = split.keep_fn(features, torch.tensor([features.shape[1]]))[0]
        if not bool(keep.any()):
            keep[0] = True
        features = features[:, keep]
    handed = time.perf_counter()
    out = split.encoder(features)
    end = time.perf_counter()
    return out, (1000 * (cnn_done - start), 1000 * (handed - cnn_done), 1000 * (end - handed))


def split_times(split, wav, threads, repeats):
    """The split path's time per step at each thread count: torch at as many threads as
    onnxruntime at one thread, and every ``SPLIT_CASES`` entry above, in interleaved rounds.

    Returns
    -------
    list of dict
        ``{"threads", "torch_threads", "options", "cnn_ms", "torch_ms", "transformer_ms",
        "total_ms"}``, medians (the total's over the calls).
    """
    cases = [(t, t if torch_threads == "same" else torch_threads, variant)
             for t in threads for torch_threads, variant in (SPLIT_CASES if t > 1
                                                             else [("same", DEFAULT)])]
    cases = list(dict.fromkeys(cases))
    splits = {case: with_sessions(split, case[0], case[2]) for case in cases}
    steps = {case: [] for case in cases}
    previous = torch.get_num_threads()
    try:
        for round_ in range(repeats + 1):  # the first round warms up
            for case, model in splits.items():
                torch.set_num_threads(case[1])
                _, step = timed_split(model, wav)
                if round_:
                    steps[case].append(step)
    finally:
        torch.set_num_threads(previous)
    rows = []
    for (t, torch_threads, variant), timed in steps.items():
        cnn, middle, encoder = (statistics.median(s) for s in zip(*timed))
        rows.append({"threads": t, "torch_threads": torch_threads, "options": variant,
                     "cnn_ms": round(cnn, 3), "torch_ms": round(middle, 3),
                     "transformer_ms": round(encoder, 3),
                     "total_ms": round(statistics.median(sum(s) for s in timed), 3)})
    return rows


def measure(args, argv):
    """Build the models and measure everything (see the module doc).

    Returns
    -------
    dict
        The record.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # torch idles while onnxruntime runs the whole model
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            built = build(CONFIGS[args.model], args.seconds, args.sparsity, args.kept_share,
                          folder)
            operators = {name: {str(t): profile(model, built["wav"], t, args.repeats, folder)
                                for t in args.threads}
                         for name, model in built["models"].items()}
            wall = wall_times(built["models"], built["wav"], args.threads, args.repeats)
            split = split_times(built["split"], built["wav"], args.threads, args.repeats)
            kept = int(built["split"].keep_fn(built["split"].features(built["wav"]),
                                              torch.tensor([built["frames"]]))[0].sum())
    finally:
        torch.set_num_threads(previous)
    record = {
        "benchmark": "int8_threads",
        "command": " ".join(["./s3env python benchmarks/int8_threads.py",
                             *portable_argv(argv, REPO)]).strip(),
        "machine": machine_facts(),
        "model": {"size": args.model, "config": CONFIGS[args.model] or "Wav2Vec2Config()",
                  "seconds": args.seconds, "batch": 1, "output": "last hidden state",
                  "weights": "random"},
        "int8": "dynamic, linear layers, per-channel weight scales (OnnxInt8)",
        "threads": args.threads, "repeats": args.repeats,
        "onnx_session": session_defaults(),
        "variants": VARIANTS,
        "operators": operators,
        "wall": wall,
        "split": {"sparsity": args.sparsity, "kept_share": args.kept_share,
                  "cnn_frames": built["frames"], "kept_frames": kept,
                  "cnn": "float", "transformer": "dynamic int8", "rows": split},
    }
    return json.loads(json.dumps(record))  # as written and read back (tuples become lists)


def _ms(value):
    """A time in ms for a table: three significant figures or so, ``-`` when absent."""
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _ratio(before, after):
    """``before / after`` as ``1.23x``, ``-`` when either is absent or zero."""
    return f"{before / after:.2f}x" if before and after else "-"


def _op(record, model, threads, op, key="ms"):
    """An operator type's figure in the record, or None."""
    row = record["operators"][model][str(threads)]["ops"].get(op)
    return None if row is None else row[key]


def _wall(record, model, threads, options=DEFAULT):
    """A whole-model wall time in the record, or None."""
    return next((r["ms"] for r in record["wall"] if (r["model"], r["threads"], r["options"])
                 == (model, threads, options)), None)


def scaling_summary(record):
    """What keeps int8 from scaling from the first to the last thread count, in sentences.

    Every operator type's excess time at the last thread count over perfect scaling
    (``t_last - t_first * threads_first / threads_last``) adds up to the whole path's; the types
    with the largest excess are named with their share of the int8 time and their own speed-up.

    Returns
    -------
    list of str
    """
    first, last = record["threads"][0], record["threads"][-1]
    if first == last:
        return []
    ideal = first / last
    int8 = {t: record["operators"]["int8"][str(t)] for t in (first, last)}
    fp32 = {t: record["operators"]["fp32"][str(t)] for t in (first, last)}
    total = {t: int8[t]["node_ms"] for t in (first, last)}
    excess = {op: row["ms"] - int8[first]["ops"].get(op, {"ms": 0})["ms"] * ideal
              for op, row in int8[last]["ops"].items()}
    lost = total[last] - total[first] * ideal
    named, covered = [], 0.0
    for op in sorted(excess, key=excess.get, reverse=True):
        if excess[op] <= 0 or len(named) == 5 or (named and covered >= 0.75 * lost):
            break
        covered += excess[op]
        named.append(f"{op} ({int8[last]['ops'][op]['ms'] / total[last]:.0%} of the int8 time "
                     f"at {last}t, own speed-up "
                     f"{_ratio(_op(record, 'int8', first, op), _op(record, 'int8', last, op))}, "
                     f"{excess[op] / lost:.0%} of the loss)" if lost > 0 else op)
    lines = [(
        f"Kernel time {first}t -> {last}t: fp32 "
        f"{_ratio(fp32[first]['node_ms'], fp32[last]['node_ms'])}, int8 "
        f"{_ratio(total[first], total[last])}; int8's {last}-thread kernel time is "
        f"{_ms(total[last])} ms where perfect scaling gives {_ms(total[first] * ideal)} ms "
        f"({_ms(lost)} ms lost). The loss is mostly in: {'; '.join(named) or 'none'}.")]

    def share(t, integer):
        ops = int8[t]["ops"]
        return sum(r["ms"] for op, r in ops.items() if (op in INTEGER_OPS) == integer)

    float_first, float_last = share(first, False), share(last, False)
    int_first, int_last = share(first, True), share(last, True)
    lines.append(
        f"Float operators the int8 export leaves untouched: {float_first / total[first]:.0%} of the "
        f"int8 kernel time at {first}t, {float_last / total[last]:.0%} at {last}t, speed-up "
        f"{_ratio(float_first, float_last)}; the integer and quantization operators: speed-up "
        f"{_ratio(int_first, int_last)}. The CNN feature encoder (float in both): "
        f"{int8[last]['parts'].get('CNN', 0) / total[last]:.0%} of the int8 time at {last}t, "
        f"speed-up {_ratio(int8[first]['parts'].get('CNN'), int8[last]['parts'].get('CNN'))}.")
    keys = [f"{op} {_ratio(_op(record, m, first, op), _op(record, m, last, op))} "
            f"({_op(record, m, last, op, 'multi_thread_ms') / _op(record, m, last, op):.0%} of "
            f"its time in calls on more than one thread)"
            for op in KEY_OPS for m in ("int8",) if _op(record, m, last, op)]
    single = [op for op, row in int8[last]["ops"].items()
              if row["ms"] and not row["multi_thread_ms"]]
    single_ms = sum(int8[last]["ops"][op]["ms"] for op in single)
    lines.append(
        f"Speed-up {first}t -> {last}t of the int8 path's key operators: {', '.join(keys)}. "
        f"Operator types that never used a second thread: {single_ms / total[last]:.0%} of the "
        f"int8 time at {last}t ({', '.join(sorted(single, key=lambda o: -int8[last]['ops'][o]['ms'])[:6]) or 'none'}).")
    gains = [f"{_ratio(_wall(record, 'fp32', t), _wall(record, 'int8', t))} at {t}t"
             for t in record["threads"]]
    best = min((r for r in record["wall"] if r["model"] == "int8" and r["threads"] == last),
               key=lambda r: r["ms"])
    lines.append(
        f"Wall time: int8 gains {', '.join(gains)} over fp32; at {last}t the fastest int8 "
        f"session options are '{best['options']}' ({_ms(best['ms'])} ms against "
        f"{_ms(_wall(record, 'int8', last))} ms as onnx_session sets them).")
    rows = record["split"]["rows"]
    base = {r["threads"]: r for r in rows if r["options"] == DEFAULT
            and r["torch_threads"] == r["threads"]}
    torch_one = next((r for r in rows if r["threads"] == last and r["torch_threads"] == 1
                      and r["options"] == DEFAULT), None)
    hand = ", ".join(f"{_ms(base[t]['torch_ms'])} ms of {_ms(base[t]['total_ms'])} at {t}t"
                     for t in record["threads"] if t in base)
    line = f"Split path: torch between the sessions takes {hand}"
    if torch_one is not None and last in base:
        line += (f"; torch at 1 thread while onnxruntime uses {last}: total "
                 f"{_ms(torch_one['total_ms'])} ms against {_ms(base[last]['total_ms'])} ms")
    lines.append(line + ".")
    return lines


def tables(record):
    """The record's figures as Markdown tables, with ``scaling_summary``'s sentences.

    Arguments
    ---------
    record : dict
        What ``measure`` returns (or its JSON).

    Returns
    -------
    str
    """
    threads, first, last = record["threads"], record["threads"][0], record["threads"][-1]
    model, ops_of = record["model"], record["operators"]
    out = [(f"wav2vec2 ({model['size']} size), whole model, {model['seconds']:g} s of audio, "
            f"batch 1, random weights; {record['machine']['cpu_count']} CPUs, onnxruntime "
            f"{record['machine']['onnxruntime']}, torch {record['machine']['torch']}; "
            f"{record['repeats']} runs (wall times: medians of interleaved rounds)"), "",
           "## onnxruntime kernel time per operator type (ms per run, profiled)", ""]
    names = [f"{m} ms {t}t" for m in ("fp32", "int8") for t in threads]
    header = ["op type", "calls", *names]
    if first != last:
        header += [f"{first}->{last}t fp32", f"{first}->{last}t int8",
                   f"int8 {last}t: share in calls a 2nd thread helped"]
    out += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    every = set().union(*(ops_of[m][str(t)]["ops"] for m in ops_of for t in threads))

    def order(op):
        return (-(_op(record, "int8", last, op) or -1), -(_op(record, "fp32", last, op) or 0))

    for op in sorted(every, key=order):
        calls = _op(record, "int8", last, op, "calls") or _op(record, "fp32", last, op, "calls")
        cells = [op, f"{calls:g}"] + [_ms(_op(record, m, t, op))
                                      for m in ("fp32", "int8") for t in threads]
        if first != last:
            multi = _op(record, "int8", last, op, "multi_thread_ms")
            cells += [_ratio(_op(record, m, first, op), _op(record, m, last, op))
                      for m in ("fp32", "int8")]
            cells.append("-" if multi is None else
                         f"{multi / _op(record, 'int8', last, op):.0%}"
                         if _op(record, "int8", last, op) else "-")
        out.append("| " + " | ".join(cells) + " |")
    for label, get in (("**total kernel time**", lambda m, t: ops_of[m][str(t)]["node_ms"]),
                       ("profiled run (model_run)", lambda m, t: ops_of[m][str(t)]["run_ms"]),
                       ("wall time, unprofiled", lambda m, t: _wall(record, m, t))):
        cells = [label, ""] + [_ms(get(m, t)) for m in ("fp32", "int8") for t in threads]
        if first != last:
            cells += [_ratio(get(m, first), get(m, last)) for m in ("fp32", "int8")] + [""]
        out.append("| " + " | ".join(cells) + " |")

    out += ["", "### By part (kernel ms per run)", "",
            "| part | " + " | ".join(names) + " |" + (
                f" {first}->{last}t fp32 | {first}->{last}t int8 |" if first != last else ""),
            "|---|" + "---:|" * (len(names) + 2 * (first != last))]
    for part in ("CNN", "transformer"):
        ms = {(m, t): ops_of[m][str(t)]["parts"].get(part) for m in ops_of for t in threads}
        cells = [part] + [_ms(ms[m, t]) for m in ("fp32", "int8") for t in threads]
        if first != last:
            cells += [_ratio(ms[m, first], ms[m, last]) for m in ("fp32", "int8")]
        out.append("| " + " | ".join(cells) + " |")

    out += ["", "## Whole model wall time by session options (ms, unprofiled)", "",
            f"onnx_session: {record['onnx_session']}", "",
            ("| threads | session options | fp32 ms | int8 ms | int8 gain over fp32 | "
             f"fp32 speed-up vs {first}t | int8 speed-up vs {first}t |"),
            "|---:|---|---:|---:|---:|---:|---:|"]
    for row in record["wall"]:
        if row["model"] != "fp32":
            continue
        t, options = row["threads"], row["options"]
        int8 = _wall(record, "int8", t, options)
        out.append(f"| {t} | {options} | {_ms(row['ms'])} | {_ms(int8)} | "
                   f"{_ratio(row['ms'], int8)} | {_ratio(_wall(record, 'fp32', first), row['ms'])}"
                   f" | {_ratio(_wall(record, 'int8', first), int8)} |")

    split = record["split"]
    out += ["", (f"## Split path (SplitInt8, SAFARI {split['sparsity']:g}, "
                 f"{split['kept_frames']} of {split['cnn_frames']} CNN frames kept; CNN "
                 f"{split['cnn']}, transformer {split['transformer']}): ms per step, medians"),
            "", ("| onnxruntime threads | torch threads | session options | CNN session | "
                 "torch between | transformer session | total | speed-up vs 1st row |"),
            "|---:|---:|---|---:|---:|---:|---:|---:|"]
    reference = split["rows"][0]["total_ms"]
    for row in split["rows"]:
        out.append(f"| {row['threads']} | {row['torch_threads']} | {row['options']} | "
                   f"{_ms(row['cnn_ms'])} | {_ms(row['torch_ms'])} | "
                   f"{_ms(row['transformer_ms'])} | {_ms(row['total_ms'])} | "
                   f"{_ratio(reference, row['total_ms'])} |")
    summary = scaling_summary(record)
    if summary:
        out += ["", "## Summary", ""] + [f"- {line}" for line in summary]
    return "\n".join(out) + "\n"


def main(argv=None):
    """Measure, print the tables and write the record if asked.

    Returns
    -------
    dict
        The record.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="base")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sparsity", type=float, default=0.3,
                        help="SAFARI's sparsity on the split path (the ladder's)")
    parser.add_argument("--kept-share", type=float, default=0.6381,
                        help="share of frames SALAD keeps on the split path (the ladder's)")
    parser.add_argument("--record", type=Path, help="write the record (JSON) here")
    parser.add_argument("--from-record", type=Path, default=None, metavar="RECORD",
                        help="measure nothing: print the tables of a record "
                             "(records/int8_threads.json)")
    args = parser.parse_args(argv)
    if args.from_record:
        record = json.loads(args.from_record.read_text())
        print(tables(record), end="")
        return record
    args.threads = sorted(set(args.threads))
    record = measure(args, argv)
    print(tables(record), end="")
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=1) + "\n")
        print(f"\nwritten {portable_path(args.record.resolve(), REPO)}")
    return record


if __name__ == "__main__":
    main()
