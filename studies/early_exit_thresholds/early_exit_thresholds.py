#!/usr/bin/env python3
"""Early exit across thresholds (the comparative study's table, paper 003): the exit heads of one
finished ``early_exit.yaml`` run evaluated at several entropy and layer-similarity thresholds;
mean exit block, WER, exit real-time factor and the FLOPs at the mean exit, as one Markdown table
and a plot of WER against the mean exit block.

Each point is the recipe itself, run in its own folder under ``--out`` on a copy of the trained
run's checkpoints (so nothing is trained again: only the test sets are decoded, greedily, as
``early_exit.yaml`` does); finished points are reused.

    ./s3env python studies/early_exit_thresholds/early_exit_thresholds.py --run
        results/compare/early_exit \\
        --dense results/compare/weight_ft
    ./s3env python studies/early_exit_thresholds/early_exit_thresholds.py --report-only
"""

import argparse
import concurrent.futures
import json
import shutil
from pathlib import Path

from s3brain.compare.collect import finished_results
from s3brain.compare.launch import run_strategy

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "LibriSpeech"
DEFAULT_THRESHOLDS = {"entropy": ["0.5", "1.0", "1.5", "2.0", "2.5"],
                      "similarity": ["0.99", "0.95", "0.9", "0.8"]}


def point_folder(out, criterion, threshold):
    return out / f"{criterion}_{threshold}"


def run_point(args, criterion, threshold):
    """Decode the test sets with the trained heads at one (criterion, threshold)."""
    folder = point_folder(args.out, criterion, threshold)
    if not (folder / "save").exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copytree(args.run / "save", folder / "save")
    overrides = [f"--exit_criterion={criterion}", f"--exit_threshold={threshold}",
                 f"--init_from={args.dense}", *(f"--{item}" for item in args.set)]
    _, status = run_strategy(RECIPE, "early_exit.yaml", folder, overrides, threads=1,
                             log_name="thresholds.log")
    print(f"{folder.name}: {status}", flush=True)


def report(args):
    rows = []
    for criterion, thresholds in args.thresholds.items():
        for threshold in thresholds:
            results = finished_results(point_folder(args.out, criterion, threshold))
            if results:
                rows.append((criterion, threshold, results))
    dense = finished_results(args.dense)
    if not rows or dense is None:
        print(f"nothing to report under {args.out} (or no finished dense run in {args.dense})")
        return
    from transformers import AutoConfig

    blocks = AutoConfig.from_pretrained(rows[0][2]["ssl_hub"]).num_hidden_layers
    lines = ["| criterion | threshold | mean exit block (test-clean / test-other) | "
             "GFLOPs / 10 s at the mean exit | WER test-clean / test-other | exit RTF |",
             "|---" * 6 + "|",
             f"| none (dense, weight fine-tuning) | | {blocks} / {blocks} | "
             f"{dense['flops_10s'] / 1e9:.2f} | "
             f"{dense['wer_test_clean']} / {dense['wer_test_other']} | |"]
    table = []
    for criterion, threshold, r in rows:  # the recipe's flops_10s is at the mean exit block
        lines.append(f"| {criterion} | {threshold} | {r['mean_exit_block_test_clean']:.2f} / "
                     f"{r['mean_exit_block_test_other']:.2f} | {r['flops_10s'] / 1e9:.2f} | "
                     f"{r['wer_test_clean']} / {r['wer_test_other']} | "
                     f"{r['exit_rtf_test_clean']} |")
        table.append({"criterion": criterion, "threshold": float(threshold), **{
            k: r.get(k) for k in ("mean_exit_block_test_clean", "mean_exit_block_test_other",
                                  "flops_10s", "wer_test_clean", "wer_test_other",
                                  "exit_rtf_test_clean")}})
    text = "\n".join(lines)
    (args.out / "early_exit_thresholds.md").write_text(text + "\n")
    (args.out / "early_exit_thresholds.json").write_text(json.dumps(table, indent=2) + "\n")
    plot(table, dense, blocks, args.out / "early_exit_thresholds.png")
    print(text)


def plot(table, dense, blocks, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for criterion, marker in (("entropy", "o"), ("similarity", "s")):
        points = sorted((r["mean_exit_block_test_clean"], r["wer_test_clean"], r["threshold"])
                        for r in table if r["criterion"] == criterion)
        if not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=criterion)
        for x, y, threshold in points:
            ax.annotate(f"{threshold:g}", (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.scatter([blocks], [dense["wer_test_clean"]], marker="*", s=120, color="black",
               label="dense (all blocks)", zorder=3)
    ax.set_xlabel("mean exit block (test-clean)")
    ax.set_ylabel("test-clean WER % (greedy)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "results" / "compare" / "early_exit",
                        help="a finished early_exit.yaml run (its exit heads are reused)")
    parser.add_argument("--dense", type=Path, default=REPO / "results" / "compare" / "weight_ft",
                        help="the weight fine-tuning run the heads were trained on")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "early_exit_thresholds")
    parser.add_argument("--entropy", nargs="*", default=DEFAULT_THRESHOLDS["entropy"],
                        help="mean frame entropy thresholds (nats)")
    parser.add_argument("--similarity", nargs="*", default=DEFAULT_THRESHOLDS["similarity"],
                        help="cosine similarity thresholds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an hparams override for every point")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.thresholds = {"entropy": args.entropy, "similarity": args.similarity}
    if not args.report_only:
        if finished_results(args.run) is None:
            parser.error(f"{args.run} is not a finished early_exit.yaml run: run "
                         "`python recipes/LibriSpeech/train.py hparams/early_exit.yaml` first")
        args.out.mkdir(parents=True, exist_ok=True)
        points = [(c, t) for c, ts in args.thresholds.items() for t in ts]
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda p: run_point(args, *p), points))
    report(args)


if __name__ == "__main__":
    main()
