#!/usr/bin/env python3
"""What one more task costs to store against what it gets right: S3-Router, LoRA at several
ranks, Houlsby adapters at several widths and partial fine-tuning, with weight fine-tuning (a
whole model per task) as the reference, on the LibriSpeech recipe. Writes a Markdown table, a
CSV and a plot of test-clean WER against bytes per task (log scale).

Every run is the recipe itself (``recipes/LibriSpeech/train.py``) with the same data, backbone,
seed and epochs; a run whose ``results.json`` holds its metric is reused, so an interrupted
sweep continues and runs of ``s3brain.compare`` in the same folder are picked up.

    ./s3env python benchmarks/per_task_storage.py --splits train-10m --jobs 2
    ./s3env python benchmarks/per_task_storage.py --splits train-1h --epochs 5 --lora-ranks 2 \
        --adapters 16 --top-blocks --jobs 1
    ./s3env python benchmarks/per_task_storage.py --report-only
"""

import argparse
import concurrent.futures
import csv
import json
import time
from pathlib import Path

from s3brain.compare import markdown_table, run_strategy

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "LibriSpeech"
METRICS = ("wer_test_clean", "wer_test_other", "wer_test_clean_lm", "wer_test_other_lm")


def jobs_for(args):
    """``(name, folder, yaml, overrides)`` of every run of the sweep.

    Arguments
    ---------
    args : argparse.Namespace
        The command line.

    Returns
    -------
    list of tuple
    """
    jobs = []
    for split in args.splits:
        base = {"train_splits": f"[{split}]", "seed": args.seed}
        if args.epochs:  # the same number of epochs for every row of the split
            base["number_of_epochs"] = args.epochs
        root = args.out / split
        jobs.append((f"{split}/weight_ft", root / "weight_ft", "weight_ft.yaml", base))
        for sparsity in args.s3router_sparsities:
            jobs.append((f"{split}/s3router {sparsity}", root / f"s3router_{sparsity}",
                         "s3router.yaml", {**base, "sparsity": sparsity}))
        for rank in args.lora_ranks:
            jobs.append((f"{split}/lora r{rank}", root / f"lora_r{rank}", "lora.yaml",
                         {**base, "lora_rank": rank, "lora_alpha": float(rank)}))
        for width in args.adapters:
            jobs.append((f"{split}/adapter {width}", root / f"adapter_{width}", "adapter.yaml",
                         {**base, "adapter_bottleneck": width}))
        for blocks in args.top_blocks:
            jobs.append((f"{split}/top_blocks {blocks}", root / f"top_blocks_{blocks}",
                         "top_blocks.yaml", {**base, "trainable_blocks": blocks}))
    return jobs


def run(job):
    """Run one job unless it is done.

    Arguments
    ---------
    job : tuple
        ``(name, folder, yaml, overrides)``.

    Returns
    -------
    tuple
        ``(name, results or None, seconds)``.
    """
    name, folder, yaml, overrides = job
    start = time.time()
    results, status = run_strategy(RECIPE, yaml, folder,
                                   [f"--{k}={v}" for k, v in overrides.items()], threads=1,
                                   log_name="storage.log")
    if results is None:
        print(f"{name}: {status}", flush=True)
    return name, results, 0.0 if status == "ok (reused)" else time.time() - start


def knob(folder):
    """The sweep's setting of a run, from its folder name (``lora_r4`` -> ``r4``)."""
    return folder.split("_")[-1] if "_" in folder and folder != "weight_ft" else ""


def collect(out):
    """The finished runs of the sweep, one row each, by split then bytes per task.

    Arguments
    ---------
    out : Path
        The sweep's folder.

    Returns
    -------
    list of dict
    """
    rows = []
    for path in sorted(Path(out).glob("*/*/results.json")):
        results = json.loads(path.read_text())
        if results.get("wer_test_clean") is None:
            continue
        rows.append({"split": path.parent.parent.name, "strategy": results["strategy"],
                     "setting": knob(path.parent.name),
                     **{k: results.get(k) for k in (
                         *METRICS, "params_trainable", "storage_bytes_per_task",
                         "storage_share_of_backbone", "flops_10s", "train_seconds")}})
    rows.sort(key=lambda r: (r["split"], r["storage_bytes_per_task"]))
    return rows


def plot(rows, path):
    """Test-clean WER (greedy and LM) against bytes per task, one series per strategy.

    Arguments
    ---------
    rows : list of dict
        ``collect``'s rows.
    path : Path
        The PNG file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = sorted({r["split"] for r in rows})
    fig, axes = plt.subplots(len(splits), 2, figsize=(11, 4 * len(splits)), squeeze=False)
    for row_axes, split in zip(axes, splits):
        mine = [r for r in rows if r["split"] == split]
        for ax, (key, label) in zip(row_axes, (("wer_test_clean", "greedy"),
                                              ("wer_test_clean_lm", "4-gram LM"))):
            for strategy in dict.fromkeys(r["strategy"] for r in mine):
                points = [r for r in mine if r["strategy"] == strategy and r[key] is not None]
                ax.plot([p["storage_bytes_per_task"] for p in points], [p[key] for p in points],
                        marker="*" if strategy == "weight_ft" else "o",
                        markersize=12 if strategy == "weight_ft" else 6, label=strategy)
                for p in points:
                    if p["setting"]:
                        ax.annotate(p["setting"], (p["storage_bytes_per_task"], p[key]),
                                    fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.set_title(f"{split}: test-clean WER ({label}) against storage per task")
            ax.set_xlabel("bytes per task (log scale)")
            ax.set_ylabel("WER %")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def write_report(out):
    """The table (Markdown, CSV) and the plot of every finished run in ``out``.

    Arguments
    ---------
    out : Path
        The sweep's folder.
    """
    rows = collect(out)
    if not rows:
        print("no finished runs yet")
        return
    with open(out / "storage.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = markdown_table(rows, ["split", "strategy", "setting", "storage_bytes_per_task",
                                  "storage_share_of_backbone", "params_trainable", *METRICS])
    (out / "storage.md").write_text(table + "\n")
    print(table)
    plot(rows, out / "wer_vs_bytes_per_task.png")


def main():
    """Run (or reuse) the sweep's runs, then write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "per_task_storage")
    parser.add_argument("--splits", nargs="*", default=["train-10m"])
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument("--s3router-sparsities", nargs="*", default=["0.1"])
    parser.add_argument("--lora-ranks", nargs="*", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--adapters", nargs="*", type=int, default=[16, 64],
                        help="Houlsby bottleneck widths")
    parser.add_argument("--top-blocks", nargs="*", type=int, default=[1],
                        help="partial fine-tuning: blocks trained from the top")
    parser.add_argument("--epochs", type=int, default=None,
                        help="number_of_epochs for every run (default: each yaml's own, 30); "
                             "train-1h at 5 covers about as many updates as train-10m at 30")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        jobs = jobs_for(args)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for name, results, seconds in pool.map(run, jobs):
                if results is not None:
                    print(f"{name}: WER {results['wer_test_clean']} "
                          f"({seconds / 60:.1f} min)", flush=True)
    write_report(args.out)


if __name__ == "__main__":
    main()
