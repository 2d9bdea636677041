#!/usr/bin/env python3
"""The deployment ladder: how much faster each way of deploying a wav2vec2-base sized model runs
on the CPU, for the whole model (waveform in, last hidden state out), side by side in one run.

Rungs: dense fp32 (torch, the reference); dense fp32 in onnxruntime (the runtime alone); dense
int8; dense int8 with the CNN in int8 too, SpeechBrain's quantization tutorial's recipe (static
int8 CNN + dynamic int8 transformer), the anchor for it, and the same with the first conv layer
(the one on raw audio) kept in float; input downsampling x2 (the signal resampled to 8 kHz
before the model, SpeechBrain's ``Downsampler`` family); SAFARI at sparsity 0.3 (physically
shrunk); SAFARI 0.3 + int8; budget pruning (``s3brain.strategies.pruning.budget``: CNN
channels, heads and FFN units pruned to ``--target-flops-ratio`` of the backbone's FLOPs,
physically shrunk; several targets give three rungs each), alone, + int8, and + int8 with the
CNN in int8 but its first layer; S6-DAMON (SAFARI 0.3 on the share of frames SALAD keeps, the
detector's own cost included); S6-DAMON + int8; S6-DAMON + int8 with the CNN in int8 too; token
merging (``s3brain.strategies.token_merging.merging``, the yaml's schedule). The model has random
weights: timing and FLOPs do not depend on them.

Which units budget pruning keeps sets the shapes, hence the time. By default every group (a
conv layer's channels, a block's heads, a block's FFN units) keeps the same share, the units
ranked by the L1 norm of their weights (data-free; L1 norms of different unit types are not
comparable, so they only rank units within a group). With ``--budget-from FOLDER`` (a trained
budget-pruning run, its ``inference/`` folder or a ``save_pretrained`` folder of its shrunk
backbone; one per target, or one for all) each group keeps the trained run's share instead
(base block ``i`` takes trained block ``floor(i * n_trained / n_base)``, conv layers alike),
every share scaled alike so that the pruned model meets the target exactly (``set_shape``).

int8 is dynamic quantization of the linear layers in onnxruntime (``s3brain.deployment.int8``;
1.73x against torch's 1.36x at this size, ``benchmarks/int8_backends.py``): the whole path
exported as one graph, or for S6-DAMON, whose frame choice depends on the data,
``SplitInt8``: the CNN and the transformer exported apart with the choice between them in torch.
"CNN int8" rungs add static int8 convolutions in the CNN feature encoder (onnxruntime's QDQ,
activation scales calibrated beforehand; here on noise, which does not change the time; their
effect on WER is measured on a trained run with ``int8_backends.py --run RUN --cnn-int8 32``).
Each rung is timed at 1 and 2 threads, batch 1, 10 s of audio, the median of ``--repeats``; the
rungs are timed in rounds, one repeat of every rung per round, so a load change on the machine
touches every rung alike. FLOPs count attention (``s3brain.utils.efficiency.count_flops``); int8 and
onnxruntime keep their float torch counterpart's FLOPs. The word error rates of the rungs are
the tiny backbone's, from runs given with ``--wer RUNG=results.json`` (printed beside the
timings). ``--record PATH`` writes the run as JSON (command, date, machine; per rung its
FLOPs, a budget rung's kept units, and per thread count the median and every repeat in ms);
``ladder_table`` renders the printed table from such a record alone.

    ./s3env python benchmarks/deployment_ladder.py
    ./s3env python benchmarks/deployment_ladder.py --threads 1 --repeats 5 --only dense "dense int8"
    ./s3env python benchmarks/deployment_ladder.py --repeats 5 --budget-from RUN/inference \
        --record benchmarks/records/deployment_ladder.json
"""

import argparse
import copy
import datetime
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import AutoConfig, AutoModel, Wav2Vec2Config

from s3brain.backbone.families import family, hf_model, transformer_blocks
from s3brain.deployment.int8 import OnnxInt8, SplitInt8
from s3brain.strategies.downsampling import InputDownsampling
from s3brain.strategies.pruning.budget import (
    BackboneFlops,
    add_budget_gates,
    kept_counts,
    prune_to_budget,
    shrink_budget,
)
from s3brain.strategies.pruning.structured import Safari, shrink
from s3brain.strategies.token_dropping import (
    SaladDetector,
    forward_with_dropping,
    uniform_keep,
)
from s3brain.strategies.token_merging.merging import forward_with_merging
from s3brain.utils.efficiency import count_flops, export_onnx, onnx_session
from s3brain.utils.provenance import machine_facts, portable_argv, portable_path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TARGET = 0.33
#: a CNN int8 rung's conv layers kept in float: the first, on raw audio
FLOAT_LAYERS = [0]


def budget_rungs(target):
    """The three budget rungs of ``target``: fp32, int8, int8 with the CNN in int8 but its
    first layer.

    Arguments
    ---------
    target : float
        The FLOPs ratio.

    Returns
    -------
    tuple of str

    Example
    -------
    >>> budget_rungs(0.5)
    ('budget 0.5', 'budget 0.5 int8', 'budget 0.5 int8 + CNN int8 (layer 0 float)')
    """
    name = f"budget {target:g}"
    return name, f"{name} int8", f"{name} int8 + CNN int8 (layer 0 float)"


def rung_names(targets=DEFAULT_TARGET):
    """The ladder's rungs in table order, the budget ones named after ``targets``.

    Arguments
    ---------
    targets : float or list of float
        The budget rungs' FLOPs ratios.

    Returns
    -------
    tuple of str

    Example
    -------
    >>> [name for name in rung_names([0.5, 0.33]) if name.startswith("budget")][::3]
    ['budget 0.5', 'budget 0.33']
    """
    targets = [targets] if isinstance(targets, (int, float)) else targets
    return ("dense", "dense onnxruntime", "dense int8", "dense int8 + CNN int8",
            "dense int8 + CNN int8 (layer 0 float)", "downsampling x2", "SAFARI 0.3",
            "SAFARI 0.3 int8", *(n for t in targets for n in budget_rungs(t)), "S6-DAMON",
            "S6-DAMON int8", "S6-DAMON int8 + CNN int8", "token merging")


RUNGS = rung_names()


def tiny_config():
    """A tiny wav2vec2 config (for the tests): 2 blocks of hidden size 32, a 3-layer CNN of 32
    channels that strides 320 samples as the base one does.

    Returns
    -------
    transformers.Wav2Vec2Config
    """
    return Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, conv_dim=(32, 32, 32), conv_kernel=(10, 8, 8),
                          conv_stride=(5, 8, 8), num_feat_extract_layers=3,
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def last_hidden(model):
    """``wav -> last hidden state`` of a transformers model (what is exported and timed).

    Arguments
    ---------
    model : transformers.PreTrainedModel
        The model.

    Returns
    -------
    callable
    """
    return lambda wav: model(wav).last_hidden_state


def salad_keep(detector, kept):
    """SALAD's frame choice as deployed: the detector runs on the CNN features (its cost
    counts), then ``kept`` of the frames are kept (which ones does not change the cost).

    Arguments
    ---------
    detector : s3brain.strategies.token_dropping.SaladDetector
        The detector whose cost counts.
    kept : float
        Share of the CNN frames kept.

    Returns
    -------
    callable
        ``(CNN features, frame lengths) -> keep``.
    """
    def keep(cnn, lengths):
        """The detector's cost, then a uniform choice of ``kept`` of the frames."""
        detector(cnn)
        return uniform_keep(lengths, cnn.shape[1], 1.0 - kept)

    return keep


def dropping(model, detector, kept):
    """``wav -> last hidden state`` with SALAD's token dropping keeping ``kept`` of the frames
    (``salad_keep``).

    Arguments
    ---------
    model : transformers.PreTrainedModel
        The (shrunk) model.
    detector : s3brain.strategies.token_dropping.SaladDetector
        The detector whose cost counts.
    kept : float
        Share of the CNN frames kept.

    Returns
    -------
    callable
    """
    keep = salad_keep(detector, kept)

    def forward(wav):
        """The last hidden state of the kept frames."""
        lengths = torch.tensor([wav.shape[1]])
        return forward_with_dropping(model, wav, lengths, keep)[0]

    return forward


class OnnxFloat:
    """A float ONNX file served by onnxruntime as a ``wav -> output`` callable (the runtime
    without int8).

    Arguments
    ---------
    path : Path
        The ONNX file (input ``wav``); read into memory.
    """

    def __init__(self, path):
        self.model = Path(path).read_bytes()
        self.set_threads(1)

    def set_threads(self, threads):
        """Serve with ``threads`` intra-op threads (a new session)."""
        self.session = onnx_session(self.model, threads)

    def __call__(self, wav):
        """The output for ``wav``."""
        return torch.from_numpy(self.session.run(None, {"wav": wav.numpy()})[0])


def unit_magnitudes(model):
    """The L1 norm of each unit's weights, per group of ``add_budget_gates``: a CNN channel's
    row of its convolution, a head's rows of the query, key and value projections and its
    columns of ``out_proj``, an FFN unit's row of ``intermediate_dense`` and column of
    ``output_dense``.

    Arguments
    ---------
    model : torch.nn.Module
        A transformers model of a family of ``s3brain.backbone.families.FAMILIES`` (ungated).

    Returns
    -------
    dict
        ``{"conv.<i>": [channels], "<block>.heads": [heads], "<block>.ffn": [units]}``.
    """
    hf = hf_model(model)
    names = family(hf)
    norms = {}
    for i, layer in enumerate(hf.get_submodule(names.conv_layers)):
        norms[f"conv.{i}"] = layer.get_submodule(names.conv[0]).weight.detach().abs().sum((1, 2))
    heads = hf.config.num_attention_heads
    for b, block in enumerate(transformer_blocks(hf)):
        q, k, v, out = (block.get_submodule(n).weight.detach().abs() for n in names.attention)
        per_dim = (q + k + v).sum(1) + out.sum(0)
        norms[f"{b}.heads"] = per_dim.view(heads, -1).sum(1)
        inner, outer = (block.get_submodule(n).weight.detach().abs() for n in names.ffn)
        norms[f"{b}.ffn"] = inner.sum(1) + outer.sum(0)
    return norms


def set_shape(gates, flops, budget, magnitudes, shares=None):
    """Prune each group to its share of ``shares``, every share scaled by the one factor with
    which the model fits ``budget`` (the units of largest ``magnitudes`` kept, the counts rounded
    down), and set the importance with which ``prune_to_budget`` then fills what is left of the
    budget in the same proportions: a unit of rank ``r`` in a group of ``n`` units with share
    ``s`` gets ``saving * (1 - (r + 0.5) / (s n))``, ``saving`` the FLOPs of one of the group's
    units at the scaled counts, so its importance per FLOP falls with its place in its group
    relative to the group's share. (Greedy pruning from the dense model would not keep the
    proportions: a CNN channel's saving depends on its neighbours' counts, so the layer first
    cut keeps being cut.)

    Arguments
    ---------
    gates : dict
        ``{group: UnitGate}`` of ``add_budget_gates``, every unit kept; their ``keep`` and
        ``score`` are set.
    flops : s3brain.strategies.pruning.budget.BackboneFlops
        The cost model.
    budget : float
        The FLOPs allowed.
    magnitudes : dict
        ``{group: tensor}`` ranking the units of each group (``unit_magnitudes``).
    shares : dict, optional
        ``{group: share of the units kept}``, in (0, 1]; default 1 for every group (every
        group pruned to the same share).

    Returns
    -------
    float
        The factor the shares are scaled by.
    """
    shares = shares or {name: 1.0 for name in gates}
    dense, minimum = flops.dense_counts, flops.minimum_counts()

    def counts_at(scale):
        return {name: max(minimum[name], min(dense[name], scale * shares[name] * dense[name]))
                for name in dense}

    low, high = 0.0, 1.0 / min(shares.values())
    for _ in range(60):  # bisection: the largest scale whose counts fit the budget
        middle = (low + high) / 2
        low, high = (middle, high) if flops.count(counts_at(middle)) <= budget else (low, middle)
    reference = counts_at(low)
    for name, gate in gates.items():
        units = gate.score.numel()
        rank = torch.empty(units)
        rank[magnitudes[name].argsort(descending=True, stable=True)] = torch.arange(
            units, dtype=rank.dtype)
        gate.keep.copy_(rank < math.floor(reference[name]))
        gate.score.copy_(flops.saving(name, reference)
                         * (1 - (rank + 0.5) / (shares[name] * units)))
    return low


class _Untagged(yaml.SafeLoader):
    """yaml's safe loader reading hyperpyyaml's tagged nodes (``!new:``, ``!ref``) as plain
    data."""


_Untagged.add_multi_constructor("!", lambda loader, suffix, node: (
    loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode)
    else loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode)
    else loader.construct_scalar(node)))


def _shrunk_config(data):
    """The first mapping inside ``data`` with per-block sizes (a shrunk model's config)."""
    if isinstance(data, dict):
        if "layer_intermediate_sizes" in data:
            return data
        data = list(data.values())
    for item in data if isinstance(data, list) else ():
        found = _shrunk_config(item)
        if found is not None:
            return found
    return None


def trained_shape(folder, dense=None):
    """The kept units of a trained, shrunk budget-pruning model and its share of each group.

    Arguments
    ---------
    folder : str or Path
        A run's output folder, its ``inference/`` folder (``hyperparams.yaml``) or a
        ``save_pretrained`` folder of the shrunk backbone (``config.json``).
    dense : str or Path, optional
        The dense backbone (hub name or folder) whose CNN widths the shares are of; default the
        ``ssl_hub`` of the run's ``results.json`` (in ``folder`` or the folder above).

    Returns
    -------
    dict
        ``kept`` and ``shares``, each ``{"conv": [per layer], "heads": [per block], "ffn": [per
        block]}``.
    """
    folder = Path(folder)
    if (folder / "inference").is_dir() and not (folder / "config.json").is_file():
        folder = folder / "inference"
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
    elif (folder / "hyperparams.yaml").is_file():
        config = _shrunk_config(yaml.load((folder / "hyperparams.yaml").read_text(), _Untagged))
    else:
        raise FileNotFoundError(f"{folder}: neither config.json nor hyperparams.yaml: give a "
                                f"budget-pruning run, its inference/ folder or a save_pretrained "
                                f"folder of its shrunk backbone")
    if not config or "layer_intermediate_sizes" not in config:
        raise ValueError(f"{folder}: not a shrunk model (no layer_intermediate_sizes)")
    if dense is None:
        found = [f / "results.json" for f in (folder, folder.parent)
                 if (f / "results.json").is_file()]
        if not found:
            raise FileNotFoundError(f"{folder}: no results.json here or above naming the dense "
                                    f"backbone: give it with --budget-dense")
        dense = json.loads(found[0].read_text())["ssl_hub"]
    dense_conv = list(AutoConfig.from_pretrained(str(dense)).conv_dim)
    kept = {"conv": [int(c) for c in config["conv_dim"]],
            "heads": [int(h) for h in config["layer_attention_heads"]],
            "ffn": [int(u) for u in config["layer_intermediate_sizes"]]}
    if len(dense_conv) != len(kept["conv"]):
        raise ValueError(f"{folder}: {len(kept['conv'])} conv layers, the dense backbone "
                         f"{dense} has {len(dense_conv)}: give its dense backbone")
    shares = {"conv": [k / d for k, d in zip(kept["conv"], dense_conv)],
              "heads": [h / config["num_attention_heads"] for h in kept["heads"]],
              "ffn": [u / config["intermediate_size"] for u in kept["ffn"]]}
    return {"kept": kept, "shares": shares}


def transferred_shares(shares, config):
    """Per-group shares of a trained model (``trained_shape``'s ``shares``) for a model of
    ``config``: its layer or block ``i`` of ``n`` takes the trained one ``floor(i * n_trained
    / n)``.

    Arguments
    ---------
    shares : dict
        ``{"conv": [...], "heads": [...], "ffn": [...]}``.
    config : transformers.PretrainedConfig
        The model pruned.

    Returns
    -------
    dict
        ``{group: share}`` with the groups of ``add_budget_gates``.

    Example
    -------
    >>> shares = {"conv": [0.5], "heads": [1.0, 0.5], "ffn": [0.2, 0.1]}
    >>> out = transferred_shares(shares, tiny_config())
    >>> [out[g] for g in ("conv.0", "conv.2", "0.heads", "1.ffn")]
    [0.5, 0.5, 1.0, 0.1]
    """
    layers, blocks = len(config.conv_dim), config.num_hidden_layers
    out = {f"conv.{i}": shares["conv"][i * len(shares["conv"]) // layers] for i in range(layers)}
    for b in range(blocks):
        for kind in ("heads", "ffn"):
            out[f"{b}.{kind}"] = shares[kind][b * len(shares[kind]) // blocks]
    return out


def grouped(counts):
    """``{group: count}`` as ``{"conv": [per layer], "heads": [per block], "ffn": [per
    block]}``.

    Arguments
    ---------
    counts : dict
        Kept units per group of ``add_budget_gates``.

    Returns
    -------
    dict

    Example
    -------
    >>> grouped({"conv.0": 5, "conv.1": 4, "0.heads": 2, "0.ffn": 9})
    {'conv': [5, 4], 'heads': [2], 'ffn': [9]}
    """
    conv = sorted((int(k.split(".")[1]), v) for k, v in counts.items() if k.startswith("conv."))
    blocks = sorted({int(k.split(".")[0]) for k in counts if not k.startswith("conv.")})
    return {"conv": [v for _, v in conv], "heads": [counts[f"{b}.heads"] for b in blocks],
            "ffn": [counts[f"{b}.ffn"] for b in blocks]}


def budget_pruned(dense, target, seconds, shares=None):
    """A copy of ``dense`` pruned to ``target`` of its backbone FLOPs on ``seconds`` of audio
    (``set_shape``, then ``prune_to_budget`` filling the rest of the budget), physically shrunk.

    Arguments
    ---------
    dense : transformers.PreTrainedModel
        The dense model (not changed).
    target : float
        The FLOPs ratio, at most.
    seconds : float
        The audio length the FLOPs are counted on.
    shares : dict, optional
        ``{group: share}`` to follow (``transferred_shares``); default the same for every group.

    Returns
    -------
    model : transformers.PreTrainedModel
        The shrunk model, in eval mode.
    kept : dict
        Kept units (``grouped``).
    ratio : float
        The shrunk model's counted FLOPs over the dense model's.

    Example
    -------
    >>> dense = AutoModel.from_config(tiny_config()).eval()
    >>> _, kept, ratio = budget_pruned(dense, 0.5, seconds=1)
    >>> 0.49 < ratio <= 0.5, len(kept["conv"])
    (True, 3)
    """
    model = copy.deepcopy(dense).eval()
    flops = BackboneFlops(model, seconds)
    magnitudes = unit_magnitudes(model)
    gates = add_budget_gates(model)
    budget = target * flops.dense
    set_shape(gates, flops, budget, magnitudes, shares)
    prune_to_budget(gates, flops, budget, flops.minimum_counts())  # fills the rest
    kept = grouped(kept_counts(gates))
    model = shrink_budget(model).eval()
    return model, kept, flops.measure(model) / flops.dense


def build(args, folder):
    """The forward and FLOPs of every rung asked for (``--only``; all by default), built from
    one random model, and what the budget rungs kept.

    Arguments
    ---------
    args : argparse.Namespace
        The command line.
    folder : Path
        Where the ONNX files are written.

    Returns
    -------
    rungs : dict
        ``{rung: (forward, flops)}``, in table order.
    wav : torch.Tensor
        The input timed.
    budgets : dict
        ``{target: {"kept", "flops_ratio" (counted), "shape", "trained_kept"}}`` of the
        budget-pruned models built.
    """
    torch.manual_seed(0)
    config = tiny_config() if args.config_tiny else Wav2Vec2Config()
    dense = AutoModel.from_config(config).eval()
    wav = torch.randn(1, int(args.seconds * 16000))
    # static int8 calibration: scales only, the time is the same; 2 s at least (its chunks)
    noise = [torch.randn(1, max(wav.shape[1], 32000)) for _ in range(4)]
    built = {}

    def once(key, make):
        """``make()``, made once."""
        if key not in built:
            built[key] = make()
        return built[key]

    def safari():
        def make():
            model = copy.deepcopy(dense)
            Safari(args.sparsity).setup(model)
            shrink(model)
            return model.eval()
        return once("safari", make)

    def detector():  # the paper's size for base (4 layers over the CNN's 512 channels)
        return once("detector", lambda: SaladDetector(config.conv_dim[-1], channels=128).eval())

    def budget(target):
        def make():
            shape, shares, source = None, None, args.budget_from.get(target)
            if source is not None:
                shape = trained_shape(source, args.budget_dense)
                shares = transferred_shares(shape["shares"], config)
            model, kept, ratio = budget_pruned(dense, target, args.seconds, shares)
            return model, {"kept": kept, "flops_ratio": round(ratio, 5), "shape": (
                "uniform share per group, units ranked by L1 norm (data-free)" if shape is None
                else f"transferred from {portable_path(source, ROOT)}"),
                "trained_kept": shape and shape["kept"]}
        return once(("budget", target), make)

    def dense_split():
        return once("dense split", lambda: SplitInt8.export(
            dense, None, wav, folder / "dense_split", calibration=noise))

    def keep():
        return salad_keep(detector(), args.kept_share)

    down = InputDownsampling("signal", 2, sample_rate=16000).eval()
    # the torch rungs, whose FLOPs are counted
    float_rungs = {
        "dense": lambda: last_hidden(dense),
        "downsampling x2": lambda: (lambda w: dense(down(w)).last_hidden_state),
        "SAFARI 0.3": lambda: last_hidden(safari()),
        **{budget_rungs(t)[0]: lambda t=t: last_hidden(budget(t)[0])
           for t in args.target_flops_ratio},
        "S6-DAMON": lambda: dropping(safari(), detector(), args.kept_share),
        "token merging": lambda: (lambda w: forward_with_merging(
            dense, w, torch.tensor([w.shape[1]]), args.merge_after, args.merge_ratio).hidden),
    }

    def exported(name, model):
        return OnnxInt8.export(last_hidden(model), [model], wav, folder / name.replace(" ", "_"))

    def onnx_float():
        export_onnx(last_hidden(dense), [dense], wav, folder / "dense.onnx")
        return OnnxFloat(folder / "dense.onnx")

    # the served rungs: (how to make it, the torch rung whose FLOPs it has)
    served = {
        "dense onnxruntime": (onnx_float, "dense"),
        "dense int8": (lambda: exported("dense int8", dense), "dense"),
        "dense int8 + CNN int8": (dense_split, "dense"),
        "dense int8 + CNN int8 (layer 0 float)": (lambda: dense_split().with_static_cnn(
            noise, float_layers=FLOAT_LAYERS), "dense"),
        "SAFARI 0.3 int8": (lambda: exported("SAFARI 0.3 int8", safari()), "SAFARI 0.3"),
        **{int8: (lambda t=t: exported(f"budget {t:g} int8", budget(t)[0]), name)
           for t in args.target_flops_ratio for name, int8, _ in [budget_rungs(t)]},
        **{cnn: (lambda t=t: SplitInt8.export(
            budget(t)[0], None, wav, folder / f"budget_{t:g}_split_cnn", calibration=noise,
            static_options={"float_layers": FLOAT_LAYERS}), name)
           for t in args.target_flops_ratio for name, _, cnn in [budget_rungs(t)]},
        "S6-DAMON int8": (lambda: SplitInt8.export(
            safari(), None, wav, folder / "s6damon_split", keep_fn=keep()), "S6-DAMON"),
        "S6-DAMON int8 + CNN int8": (lambda: SplitInt8.export(
            safari(), None, wav, folder / "s6damon_split_cnn", keep_fn=keep(),
            calibration=noise), "S6-DAMON"),
    }

    def forward(name):
        return once(("forward", name), float_rungs[name])

    def flops(name):
        return once(("flops", name), lambda: count_flops(lambda: forward(name)(wav)))

    rungs = {}
    with torch.no_grad():
        for name in rung_names(args.target_flops_ratio):
            if args.only and name not in args.only:
                continue
            if name in float_rungs:
                rungs[name] = (forward(name), flops(name))
            else:
                make, source = served[name]
                rungs[name] = (once(name, make), flops(source))
    return rungs, wav, {key[1]: value[1] for key, value in built.items()
                        if isinstance(key, tuple) and key[0] == "budget"}


def time_rungs(rungs, wav, threads, repeats):
    """Latencies (ms) of every rung at ``threads`` threads, timed in interleaved rounds after
    one warm-up call each.

    Arguments
    ---------
    rungs : dict
        ``{rung: (forward, flops)}``.
    wav : torch.Tensor
        The input.
    threads : int
        CPU threads (torch and onnxruntime).
    repeats : int
        Rounds.

    Returns
    -------
    dict
        ``{rung: [milliseconds per round]}``.
    """
    torch.set_num_threads(threads)
    for forward, _ in rungs.values():
        if hasattr(forward, "set_threads"):
            forward.set_threads(threads)
    times = {name: [] for name in rungs}
    with torch.no_grad():
        for forward, _ in rungs.values():  # warm-up
            forward(wav)
        for _ in range(repeats):
            for name, (forward, _) in rungs.items():
                start = time.perf_counter()
                forward(wav)
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def ladder_table(record, accuracy=None, accuracy_header="WER (tiny backbone)"):
    """The ladder's markdown table from a record (``--record``) alone: per rung its GFLOPs, its
    FLOPs reduction against dense, per thread count its median ms and speed-up against dense,
    and the speed-up at the first thread count over the FLOPs reduction.

    Arguments
    ---------
    record : dict
        ``threads`` and ``rungs`` (``{rung: {"flops": ..., "ms": {"<threads>": {"median":
        ...}}}}``).
    accuracy : dict, optional
        ``{rung: cell}``, already formatted: an extra last column.
    accuracy_header : str
        That column's header.

    Returns
    -------
    str
        The table's lines.

    Example
    -------
    >>> record = {"threads": [1], "rungs": {
    ...     "dense": {"flops": 4e9, "ms": {"1": {"median": 100.0}}},
    ...     "half": {"flops": 2e9, "ms": {"1": {"median": 40.0}}}}}
    >>> print(ladder_table(record, {"half": "9.50"}, "WER"))
    | rung | GFLOPs | FLOPs red. | ms 1t | speed-up 1t | speed-up / FLOPs red. (1st) | WER |
    |---|---|---|---|---|---|---|
    | dense | 4.00 | 1.00x | 100 | 1.00x | 1.00 |  |
    | half | 2.00 | 2.00x | 40.0 | 2.50x | 1.25 | 9.50 |
    """
    threads = [str(t) for t in record["threads"]]
    rungs = record["rungs"]
    dense = rungs.get("dense")
    header = ["rung", "GFLOPs", "FLOPs red."]
    for t in threads:
        header += [f"ms {t}t", f"speed-up {t}t"]
    header.append("speed-up / FLOPs red. (1st)")
    if accuracy is not None:
        header.append(accuracy_header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, rung in rungs.items():
        reduction = dense["flops"] / rung["flops"] if dense else math.nan
        cells = [name, f"{rung['flops'] / 1e9:.2f}", f"{reduction:.2f}x"]
        speedups = []
        for t in threads:
            ms = rung["ms"][t]["median"]
            base = dense["ms"][t]["median"] if dense else None
            speedups.append(base / ms if base else None)
            cells += [f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}",
                      f"{speedups[-1]:.2f}x" if base else ""]
        cells.append(f"{speedups[0] / reduction:.2f}" if speedups[0] else "")
        if accuracy is not None:
            cells.append(accuracy.get(name, ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _print_budget(name, budget):
    """What the budget rung kept, and its counted FLOPs ratio."""
    kept = budget["kept"]
    print(f"{name} ({budget['shape']}): counted FLOPs {budget['flops_ratio']:.4f} of dense")
    print(f"  conv channels per layer: {kept['conv']}")
    print(f"  heads per block: {kept['heads']}")
    print(f"  FFN units per block: {kept['ffn']}")
    if budget["trained_kept"]:
        trained = budget["trained_kept"]
        print(f"  trained run: conv {trained['conv']}, heads {trained['heads']}, FFN "
              f"{trained['ffn']}")


def parse_arguments(argv):
    """The command line, checked: the rungs of ``--only`` and ``--wer`` exist.

    Arguments
    ---------
    argv : list of str
        The arguments.

    Returns
    -------
    args : argparse.Namespace
    wers : dict
        ``{rung: the word error rate of --wer}``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--sparsity", type=float, default=0.3)
    parser.add_argument("--kept-share", type=float, default=0.6381,
                        help="share of frames SALAD keeps (the S6-DAMON run's kept_share)")
    parser.add_argument("--merge-after", type=int, nargs="*", default=[0])
    parser.add_argument("--merge-ratio", type=float, default=0.483)
    parser.add_argument("--target-flops-ratio", type=float, nargs="+", default=[DEFAULT_TARGET],
                        metavar="R", help="the budget rungs' backbone FLOPs over the dense "
                                          "one's, at most (three rungs per target)")
    parser.add_argument("--budget-from", type=Path, nargs="*", default=[], metavar="FOLDER",
                        help="a trained budget-pruning run (or its inference/ folder, or a "
                             "save_pretrained folder of its shrunk backbone) whose share of "
                             "each group the budget rungs keep: one for every target, or one "
                             "per target in their order")
    parser.add_argument("--budget-dense", metavar="HUB",
                        help="with --budget-from: the run's dense backbone (default: the "
                             "ssl_hub of its results.json)")
    parser.add_argument("--only", nargs="*", default=None, metavar="RUNG",
                        help=f"these rungs only, of: {', '.join(RUNGS)} (the budget ones "
                             f"named after --target-flops-ratio)")
    parser.add_argument("--wer", nargs="*", default=[], metavar="RUNG=RESULTS[:KEY]",
                        help="a run's results.json (and key, default wer_test_clean) per rung")
    parser.add_argument("--record", type=Path, metavar="PATH",
                        help="write the run as JSON here")
    parser.add_argument("--config-tiny", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    targets = args.target_flops_ratio
    if len(args.budget_from) not in (0, 1, len(targets)):
        parser.error(f"--budget-from: one folder, or one per target ({len(targets)})")
    args.budget_from = dict(zip(targets, args.budget_from * len(targets)
                                if len(args.budget_from) == 1 else args.budget_from))
    names = rung_names(targets)
    wers = {}
    for item in args.wer:
        rung, _, source = item.partition("=")
        path, _, key = source.partition(":")
        wers[rung] = json.loads(Path(path).read_text()).get(key or "wer_test_clean")
    unknown = [n for n in [*(args.only or []), *wers] if n not in names]
    if unknown:
        parser.error(f"unknown rung(s) {unknown}: choose from {list(names)}")
    return args, wers


def main(argv=None):
    """Build the rungs, time them at each thread count, print the table (and write the record).

    Arguments
    ---------
    argv : list of str, optional
        The arguments; default the command line's.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args, wers = parse_arguments(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rungs, wav, budgets = build(args, Path(tmp))
        for target, budget in budgets.items():
            _print_budget(budget_rungs(target)[0], budget)
        timings = {t: time_rungs(rungs, wav, t, args.repeats) for t in args.threads}
    record = {
        "command": " ".join(["./s3env python benchmarks/deployment_ladder.py",
                             *(f'"{a}"' if " " in a else a for a in portable_argv(argv, ROOT))]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "model": ("tiny wav2vec2 (tests)" if args.config_tiny
                  else "wav2vec2-base sized, random weights"),
        "seconds": args.seconds, "batch": 1, "repeats": args.repeats, "threads": args.threads,
        "target_flops_ratio": args.target_flops_ratio,
        "rungs": {},
    }
    budget_of = {name: budget for target, budget in budgets.items()
                 for name in budget_rungs(target)}
    for name, (_, flops) in rungs.items():
        entry = {"flops": int(flops)}
        entry.update({k: v for k, v in budget_of.get(name, {}).items() if v is not None})
        entry["ms"] = {}
        for t in args.threads:
            repeats = [round(ms, 3) for ms in timings[t][name]]
            entry["ms"][str(t)] = {"median": statistics.median(repeats), "repeats": repeats}
        record["rungs"][name] = entry
    if wers:
        record["wer"] = wers
    print(f"{record['model']}, whole model, {args.seconds:g} s of audio, batch 1, "
          f"median of {args.repeats} interleaved rounds")
    accuracy = ({rung: f"{value:.2f}" for rung, value in wers.items() if value is not None}
                if args.wer else None)
    print(ladder_table(record, accuracy))
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=1) + "\n")
        print(f"written {portable_path(args.record.resolve(), ROOT)}")


if __name__ == "__main__":
    main()
