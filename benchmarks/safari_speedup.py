#!/usr/bin/env python3
"""Does structured pruning really run faster? Dense against SAFARI-shrunk models, side by side.

A wav2vec2-base sized model (random weights: timing does not depend on them) is pruned with the
SAFARI split (sp_heads - sp_ffn = 0.2) at each sparsity and physically shrunk. For each model the
script measures, in one run with a fixed thread count, FLOPs
(``s3brain.utils.efficiency.count_flops``, attention products included) and CPU
latency (median of repeats) of the transformer encoder on 10 s of audio, and of the whole model.
Target: transformer speed-up >= 0.9 x the FLOPs reduction.

With ``--kept-share`` (the share of CNN frames SALAD lets through, ``kept_share_test_clean`` of an
S6-DAMON run) each sparsity also gets its S6-DAMON row: the shrunk model run on that share of the
frames, the SALAD detector's own cost included in the whole-model figures.

With ``--flops-only`` nothing is timed (FLOPs do not need a quiet machine); ``--earlier-speedups``
then gives the speed-ups measured before, one per non-dense row, to print their ratio to the
FLOPs reduction counted now.

    ./s3env python benchmarks/safari_speedup.py
    ./s3env python benchmarks/safari_speedup.py --flops-only --earlier-speedups 1.19 1.26 1.74
    ./s3env python benchmarks/safari_speedup.py --sparsities 0.3 --kept-share 0.7
    ./s3env python benchmarks/safari_speedup.py --model tiny --sparsities 0.2 0.5 --threads 2
    python benchmarks/safari_speedup.py --device cuda    # on a GPU
"""

import argparse
import copy

import torch
from transformers import AutoModel, Wav2Vec2Config

from s3brain.backbone.wrapper import default_backbone
from s3brain.strategies.pruning.structured import Safari, shrink
from s3brain.strategies.token_dropping import SaladDetector, forward_with_dropping, uniform_keep
from s3brain.utils.efficiency import count_flops, median_latency_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["base", "tiny"], default="base")
    parser.add_argument("--sparsities", type=float, nargs="*", default=[0.2, 0.3, 0.5])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kept-share", type=float, default=None,
                        help="also S6-DAMON: SAFARI plus SALAD keeping this share of the frames")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs, time nothing")
    parser.add_argument("--earlier-speedups", type=float, nargs="*", default=None,
                        help="transformer speed-ups measured earlier, one per non-dense row")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    args = parser.parse_args()
    torch.manual_seed(0)
    dense = (AutoModel.from_config(Wav2Vec2Config()) if args.model == "base"
             else AutoModel.from_pretrained(default_backbone())).eval().to(args.device)
    wav = torch.randn(1, int(args.seconds * 16000)).to(args.device)
    with torch.no_grad():
        features = dense.feature_projection(dense.feature_extractor(wav).transpose(1, 2))[0]

    # A detector the paper's size for base (4 layers, about 0.3 M parameters over 512 channels)
    detector = SaladDetector(dense.config.conv_dim[-1],
                             channels=128 if args.model == "base" else 64).eval().to(args.device)

    def measure(model, kept=None):
        encoder = lambda: model.encoder(features)  # noqa: E731
        whole = lambda: model(wav)  # noqa: E731
        if kept is not None:  # fewer frames; which ones does not change the cost
            short = features[:, : round(kept * features.shape[1])]
            encoder = lambda: model.encoder(short)  # noqa: E731

            def keep(cnn, lengths):
                detector(cnn)
                return uniform_keep(lengths, cnn.shape[1], 1.0 - kept)

            whole = lambda: forward_with_dropping(  # noqa: E731
                model, wav, torch.tensor([wav.shape[1]], device=wav.device), keep)

        def latency(forward):
            if args.flops_only:
                return float("nan")
            if wav.is_cuda:  # wall time must wait for the GPU's queued kernels
                return median_latency_ms(lambda: (forward(), torch.cuda.synchronize(wav.device)),
                                         repeats=args.repeats, threads=args.threads)
            return median_latency_ms(forward, repeats=args.repeats, threads=args.threads)

        with torch.no_grad():
            return count_flops(encoder), latency(encoder), count_flops(whole), latency(whole)

    rows = [("dense", *measure(dense))]
    for sp in args.sparsities:
        model = copy.deepcopy(dense)
        Safari(sp).setup(model)
        shrink(model)
        rows.append((f"SAFARI sp {sp:g}", *measure(model.eval())))
        if args.kept_share is not None:
            rows.append((f"S6-DAMON sp {sp:g}", *measure(model, args.kept_share)))
    d_flops, d_ms = rows[0][1], rows[0][2]
    earlier = [1.0, *args.earlier_speedups] if args.earlier_speedups else None
    if earlier is not None and len(earlier) != len(rows):
        parser.error(f"--earlier-speedups needs {len(rows) - 1} values, one per non-dense row")
    timing = ("FLOPs only, speed-ups as measured earlier" if earlier is not None else
              "FLOPs only" if args.flops_only else
              f"{args.device}, median of {args.repeats}" if args.device != "cpu" else
              f"{args.threads} thread(s), median of {args.repeats}")
    print(f"{args.model} model, {args.seconds:g} s of audio, {timing}"
          + (f"; S6-DAMON keeps {args.kept_share:.1%} of the frames"
             if args.kept_share is not None else ""))
    print(f"{'':18s} {'enc GFLOPs':>10s} {'enc ms':>8s} {'FLOPs red.':>10s} {'speed-up':>9s} "
          f"{'ratio':>6s} {'all GFLOPs':>10s} {'all ms':>8s}")
    for i, (name, flops, ms, all_flops, all_ms) in enumerate(rows):
        reduction = d_flops / flops
        speedup = earlier[i] if earlier is not None else d_ms / ms
        enc_ms, whole_ms = ("-", "-") if args.flops_only else (f"{ms:.1f}", f"{all_ms:.1f}")
        speed, ratio = (("-", "-") if speedup != speedup  # nan: FLOPs only, nothing given
                        else (f"{speedup:.2f}x", f"{speedup / reduction:.2f}"))
        print(f"{name:18s} {flops / 1e9:10.2f} {enc_ms:>8s} {reduction:9.2f}x {speed:>9s} "
              f"{ratio:>6s} {all_flops / 1e9:10.2f} {whole_ms:>8s}")


if __name__ == "__main__":
    main()
