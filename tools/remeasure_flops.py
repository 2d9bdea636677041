#!/usr/bin/env python3
"""Re-measure the FLOPs figures of the recipe READMEs, with and without the attention products.

FLOPs depend only on the architecture and on the strategy's structure, never on trained weights,
so every figure is re-measured without training: each yaml is loaded with the backbone it
names, its strategy is set up as in training (``setup_strategies``: masks, pruning; the shrunk
per-block sizes of structured pruning depend only on the sparsity), and the recipe's own
``cost_report`` counts it. What a run measured and recorded is given back to it: the share of
frames kept (token dropping), the mean exit block (early exit). The SALAD detector's weights
do not change its cost, so an untrained one of the recorded shape (37,377 parameters) stands in.

Each figure is printed twice: "before", counted as the READMEs were (torch's flop counter alone,
which skips the CPU attention kernel), and "after" (``s3brain.utils.efficiency.count_flops``).

    OMP_NUM_THREADS=1 ./s3env python tools/remeasure_flops.py
    OMP_NUM_THREADS=1 ./s3env python tools/remeasure_flops.py --only comparison
"""

import argparse
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml

import s3brain.deployment.model
import s3brain.strategies
import s3brain.training.experiment
from s3brain.strategies.early_exit import flops_at_exit
from s3brain.strategies.token_dropping import SaladDetector, save_detector
from s3brain.utils import efficiency

REPO = Path(__file__).resolve().parents[1]
LIBRI = REPO / "recipes" / "LibriSpeech" / "hparams"
COMMON_VOICE = REPO / "recipes" / "CommonVoice" / "hparams"

# (section, label, yaml, overrides, what the run recorded: kept share or mean exit block)
# Kept shares and mean exit blocks are the test-clean values in the LibriSpeech README (4 digits
# where the comparison table gives them, else as printed there); CommonVoice's kept shares are
# printed to 0.1 %, which leaves one frame of 499 open (about 0.01 GFLOPs).
FIGURES = [
    ("comparison", "weight_ft", LIBRI / "weight_ft.yaml", {}, {}),
    ("comparison", "adapter", LIBRI / "adapter.yaml", {}, {}),
    ("comparison", "downsampling_conv (x3)", LIBRI / "downsampling_conv.yaml", {}, {}),
    ("comparison", "downsampling_pool (x2)", LIBRI / "downsampling_pool.yaml", {}, {}),
    ("comparison", "downsampling_signal (x2)", LIBRI / "downsampling_signal.yaml", {}, {}),
    ("comparison", "early_exit (mean exit 2.765)", LIBRI / "early_exit.yaml", {},
     {"mean_exit_block": 2.765}),
    ("comparison", "imp 0.5", LIBRI / "imp.yaml", {"sparsity": 0.5}, {}),
    ("comparison", "omp 0.5", LIBRI / "omp.yaml", {"sparsity": 0.5}, {}),
    ("comparison", "parp 0.5", LIBRI / "parp.yaml", {"sparsity": 0.5}, {}),
    ("comparison", "s3router 0.1", LIBRI / "s3router.yaml", {"sparsity": 0.1}, {}),
    ("comparison", "s3router_p 0.5", LIBRI / "s3router_p.yaml", {"sparsity": 0.5}, {}),
    ("comparison", "s6damon 0.3 (kept 0.6381)", LIBRI / "s6damon.yaml", {"sparsity": 0.3},
     {"kept_share": 0.6381}),
    ("comparison", "salad 0.6 (kept 0.6381)", LIBRI / "salad.yaml", {"skip_ratio": 0.6},
     {"kept_share": 0.6381}),
    ("comparison", "skip_random (kept 0.6409)", LIBRI / "skip_random.yaml", {},
     {"kept_share": 0.6409}),
    ("comparison", "skip_uniform (kept 0.635)", LIBRI / "skip_uniform.yaml", {},
     {"kept_share": 0.635}),
    *[("structured", f"{name} {sp:g}", LIBRI / f"{name}.yaml", {"sparsity": sp}, {})
      for sp in (0.2, 0.3, 0.5) for name in ("safari", "omp_structured", "parp_structured")],
    ("skipping", "salad 0.8 (kept 0.517)", LIBRI / "salad.yaml", {"skip_ratio": 0.8},
     {"kept_share": 0.517}),
    # The README prints these two shares to 0.1 % only; 0.513 and 0.519 themselves keep one frame
    # (of 499) fewer than the runs did: their recorded 1.82 / 1.83 GFLOPs (34.7 / 34.2 % saved)
    # need 256 and 259 frames, i.e. shares in [0.5130, 0.5135) and [0.5190, 0.5195).
    ("skipping", "skip_uniform 0.8 (kept 0.513)", LIBRI / "skip_uniform.yaml", {},
     {"kept_share": 0.5133}),
    ("skipping", "skip_random 0.8 (kept 0.519)", LIBRI / "skip_random.yaml", {},
     {"kept_share": 0.5193}),
    *[("early_exit", f"exit at mean block {block:g}", LIBRI / "early_exit.yaml", {},
       {"mean_exit_block": block})
      for block in (3.99, 3.78, 3.17, 2.77, 2.09, 1.78, 1.38, 1.06, 1.01, 1.0)],
    ("common_voice", "weight_ft", COMMON_VOICE / "weight_ft.yaml", {}, {}),
    ("common_voice", "salad nl (kept 0.655)", COMMON_VOICE / "salad.yaml",
     {"language": "nl"}, {"kept_share": 0.655}),
    ("common_voice", "salad es (kept 0.661)", COMMON_VOICE / "salad.yaml",
     {"language": "es"}, {"kept_share": 0.661}),
]


@contextmanager
def attention_counted(counted):
    """Count as ``count_flops`` does (``True``) or as torch's counter alone did (``False``)."""
    formulas = efficiency.ATTENTION_FLOP_FORMULAS
    efficiency.ATTENTION_FLOP_FORMULAS = formulas if counted else {}
    try:
        yield
    finally:
        efficiency.ATTENTION_FLOP_FORMULAS = formulas


def _no_onnx(*args, **kwargs):
    # Only the FLOPs are wanted: cost_report records a failed export and goes on.
    raise RuntimeError("skipped by remeasure_flops")


def load_recipe(yaml, overrides, workdir):
    """The yaml's hparams with the strategy set up as before training, no data, no init_from."""
    text = yaml.read_text()
    keys = {"output_folder": str(workdir / "run"), "init_from": None, "teacher_from": None,
            "salad_detector": str(workdir), "cost_repeats": 1, **overrides}
    keys = {k: v for k, v in keys.items() if re.search(rf"^{k}:", text, re.M)}
    with open(yaml, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, keys)
    s3brain.training.experiment.setup_strategies(hparams.get("strategies"), hparams)
    return hparams


def flops_10s(hparams, recorded):
    """``flops_10s`` of the recipe's ``cost_report``, as a run reports it."""
    strategies = hparams.get("strategies") or []
    for strategy in strategies:  # token dropping deploys the share of frames it kept
        if "kept_share" in recorded and hasattr(strategy, "deployed_kept_share"):
            strategy.deployed_kept_share = recorded["kept_share"]
    modules = torch.nn.ModuleDict({**hparams["modules"], **s3brain.strategies.strategy_modules(
        strategies)}).eval()  # as after the run's evaluation
    head = torch.nn.Sequential(modules["head"], modules["ctc_lin"])
    extra = [m for k, m in modules.items() if k not in ("ssl", "head", "ctc_lin")]
    flops = s3brain.deployment.model.cost_report(modules["ssl"], head, strategies, seconds=10,
                                                 repeats=1, extra=extra)["flops_10s"]
    if "mean_exit_block" in recorded:
        flops = flops_at_exit(modules.ssl, flops, recorded["mean_exit_block"])
    return flops


def transformer_flops_ratio(kept_share, seconds=10):
    """FLOPs of the embedded backbone's transformer on ``kept_share`` of the frames of ``seconds``
    of audio, over its FLOPs on all of them (attention makes this less than linear)."""
    from transformers import AutoModel

    from s3brain.backbone.wrapper import default_backbone

    model = AutoModel.from_pretrained(default_backbone()).eval()
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(seconds * 16000)))
    hidden = torch.zeros(1, frames, model.config.hidden_size)
    with torch.no_grad():
        full = efficiency.count_flops(lambda: model.encoder(hidden))
        kept = efficiency.count_flops(
            lambda: model.encoder(hidden[:, : max(1, round(kept_share * frames))]))
    return kept / full


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None,
                        help="sections: comparison structured skipping early_exit common_voice "
                             "transformer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    s3brain.deployment.model.Deployment.quantize = _no_onnx  # no ONNX export nor int8: FLOPs only
    sections = args.only or sorted({f[0] for f in FIGURES} | {"transformer"})
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        save_detector(workdir / "salad_detector.pt",
                      SaladDetector(in_channels=64, channels=64, layers=4, kernel=3))
        print("| section | figure | GFLOPs / 10 s before | after | attention share | "
              "saving over weight_ft before | after |")
        print("| --- " * 7 + "|")
        dense = {}  # per recipe: its weight_ft figures, the reference of the savings
        for section, label, yaml, overrides, recorded in FIGURES:
            if section not in sections and label != "weight_ft":
                continue
            counts = []
            for counted in (False, True):
                with attention_counted(counted):
                    counts.append(flops_10s(load_recipe(yaml, overrides, workdir), recorded))
            before, after = counts
            if label == "weight_ft":
                dense[yaml.parent] = counts
                if section not in sections:
                    continue
            d_before, d_after = dense[yaml.parent]
            print(f"| {section} | {label} | {before / 1e9:.4f} | {after / 1e9:.4f} | "
                  f"{1 - before / after:.1%} | {1 - before / d_before:.1%} | "
                  f"{1 - after / d_after:.1%} |", flush=True)
    if "transformer" in sections:
        print("\nTransformer FLOPs saving (the embedded backbone's encoder on the kept frames):")
        for kept in (0.6381, 0.635, 0.6409, 0.517, 0.513, 0.519):
            savings = []
            for counted in (False, True):
                with attention_counted(counted):
                    savings.append(1 - transformer_flops_ratio(kept))
            print(f"  kept {kept:.4g}: before {savings[0]:.1%}, after {savings[1]:.1%}")


if __name__ == "__main__":
    main()
