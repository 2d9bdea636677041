#!/usr/bin/env python3
"""The deployment ladder: how much faster each way of deploying a wav2vec2-base sized model runs
on the CPU, for the whole model (waveform in, last hidden state out), side by side in one run.

Rungs: dense fp32 (torch, the reference); dense fp32 in onnxruntime (the runtime alone); dense
int8; dense int8 with the CNN in int8 too; input downsampling x2 (the signal resampled to 8 kHz
before the model, SpeechBrain's ``Downsampler`` family); SAFARI at sparsity 0.3 (physically
shrunk); SAFARI 0.3 + int8; S6-DAMON (SAFARI 0.3 on the share of frames SALAD keeps, the
detector's own cost included); S6-DAMON + int8; S6-DAMON + int8 with the CNN in int8 too; token
merging (``s3brain.strategies.token_merging.merging``, the yaml's schedule). The model has random
weights: timing and FLOPs do not depend on them.

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
timings).

    ./s3env python benchmarks/deployment_ladder.py
    ./s3env python benchmarks/deployment_ladder.py --threads 1 --repeats 5 --only dense "dense int8"
"""

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModel, Wav2Vec2Config

from s3brain.deployment.int8 import OnnxInt8, SplitInt8
from s3brain.strategies.downsampling import InputDownsampling
from s3brain.strategies.pruning.structured import Safari, shrink
from s3brain.strategies.token_dropping import SaladDetector, forward_with_dropping, uniform_keep
from s3brain.strategies.token_merging.merging import forward_with_merging
from s3brain.utils.efficiency import count_flops, export_onnx, onnx_session

RUNGS = ("dense", "dense onnxruntime", "dense int8", "dense int8 + CNN int8", "downsampling x2",
         "SAFARI 0.3", "SAFARI 0.3 int8", "S6-DAMON", "S6-DAMON int8", "S6-DAMON int8 + CNN int8",
         "token merging")


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


def build(args, folder):
    """Every rung's forward, its FLOPs and the modules behind it.

    Arguments
    ---------
    args : argparse.Namespace
        The command line.
    folder : Path
        Where the ONNX files are written.

    Returns
    -------
    dict
        ``{rung: (forward, flops)}``.
    """
    torch.manual_seed(0)
    dense = AutoModel.from_config(Wav2Vec2Config()).eval()
    wav = torch.randn(1, int(args.seconds * 16000))
    safari = copy.deepcopy(dense)
    Safari(args.sparsity).setup(safari)
    shrink(safari)
    safari.eval()
    # a detector the paper's size for base (4 layers over the CNN's 512 channels)
    detector = SaladDetector(dense.config.conv_dim[-1], channels=128).eval()
    down = InputDownsampling("signal", 2, sample_rate=16000).eval()
    rungs = {
        "dense": (last_hidden(dense), [dense]),
        "downsampling x2": (lambda w: dense(down(w)).last_hidden_state, [dense, down]),
        "SAFARI 0.3": (last_hidden(safari), [safari]),
        "S6-DAMON": (dropping(safari, detector, args.kept_share), [safari, detector]),
        "token merging": (lambda w: forward_with_merging(
            dense, w, torch.tensor([w.shape[1]]), args.merge_after,
            args.merge_ratio).hidden, [dense]),
    }
    out = {}
    with torch.no_grad():
        for name, (forward, modules) in rungs.items():
            out[name] = (forward, count_flops(lambda f=forward: f(wav)))
        export_onnx(last_hidden(dense), [dense], wav, folder / "dense.onnx")
        out["dense onnxruntime"] = (OnnxFloat(folder / "dense.onnx"), out["dense"][1])
        for name, source in (("dense int8", "dense"), ("SAFARI 0.3 int8", "SAFARI 0.3")):
            forward, modules = rungs[source]
            int8 = OnnxInt8.export(forward, modules, wav, folder / name.replace(" ", "_"))
            out[name] = (int8, out[source][1])
        noise = [torch.randn(1, wav.shape[1]) for _ in range(4)]  # scales only: time is the same
        out["dense int8 + CNN int8"] = (SplitInt8.export(
            dense, None, wav, folder / "dense_split", calibration=noise), out["dense"][1])
        keep = salad_keep(detector, args.kept_share)
        out["S6-DAMON int8"] = (SplitInt8.export(safari, None, wav, folder / "s6damon_split",
                                                 keep_fn=keep), out["S6-DAMON"][1])
        out["S6-DAMON int8 + CNN int8"] = (SplitInt8.export(
            safari, None, wav, folder / "s6damon_split_cnn", keep_fn=keep, calibration=noise),
            out["S6-DAMON"][1])
    return {k: out[k] for k in RUNGS if k in out and (not args.only or k in args.only)}, wav


def time_rungs(rungs, wav, threads, repeats):
    """Median latency (ms) of every rung at ``threads`` threads, timed in interleaved rounds.

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
        ``{rung: milliseconds}``.
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
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    """Build the rungs, time them at each thread count, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--sparsity", type=float, default=0.3)
    parser.add_argument("--kept-share", type=float, default=0.6381,
                        help="share of frames SALAD keeps (the S6-DAMON run's kept_share)")
    parser.add_argument("--merge-after", type=int, nargs="*", default=[0])
    parser.add_argument("--merge-ratio", type=float, default=0.483)
    parser.add_argument("--only", nargs="*", default=None, choices=RUNGS)
    parser.add_argument("--wer", nargs="*", default=[], metavar="RUNG=RESULTS[:KEY]",
                        help="a run's results.json (and key, default wer_test_clean) per rung")
    args = parser.parse_args()
    wers = {}
    for item in args.wer:
        rung, _, source = item.partition("=")
        path, _, key = source.partition(":")
        wers[rung] = json.loads(Path(path).read_text()).get(key or "wer_test_clean")
    with tempfile.TemporaryDirectory() as tmp:
        rungs, wav = build(args, Path(tmp))
        timings = {t: time_rungs(rungs, wav, t, args.repeats) for t in args.threads}
    dense_flops = rungs["dense"][1] if "dense" in rungs else None
    print(f"wav2vec2-base sized model, whole model, {args.seconds:g} s of audio, batch 1, "
          f"median of {args.repeats} interleaved rounds")
    header = ["rung", "GFLOPs", "FLOPs red."]
    for t in args.threads:
        header += [f"ms {t}t", f"speed-up {t}t"]
    header += ["speed-up / FLOPs red. (1st)", "WER (tiny backbone)"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, (_, flops) in rungs.items():
        reduction = dense_flops / flops if dense_flops else float("nan")
        cells = [name, f"{flops / 1e9:.2f}", f"{reduction:.2f}x"]
        for t in args.threads:
            ms, base = timings[t][name], timings[t].get("dense")
            cells += [f"{ms:.0f}", f"{base / ms:.2f}x" if base else ""]
        first = timings[args.threads[0]]
        cells.append(f"{first['dense'] / first[name] / reduction:.2f}" if "dense" in first else "")
        cells.append("" if wers.get(name) is None else f"{wers[name]:.2f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
