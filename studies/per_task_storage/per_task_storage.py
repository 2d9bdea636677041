#!/usr/bin/env python3
"""What one more task costs to store against what it gets right: S3-Router, LoRA at several
ranks, Houlsby adapters at several widths and partial fine-tuning, with weight fine-tuning (a
whole model per task) as the reference, on the LibriSpeech recipe or a SUPERB task
(``--recipe SUPERB/KS``). Writes a Markdown table, a CSV and a plot of the test metric (WER on
test-clean; a SUPERB task's primary metric, accuracy) against bytes per task (log scale).

Every run is the recipe itself (``recipes/LibriSpeech/train.py``, ``recipes/SUPERB/KS/train.py``)
with the same data, backbone, seed and epochs; a run whose ``results.json`` holds its metric is
reused, so an interrupted sweep continues and runs of ``s3brain.compare`` in the same folder are
picked up. LibriSpeech runs go to ``<out>/<split>/<run>``, a SUPERB task's to
``<out>/SUPERB_KS/<run>``, where its table also gives the paired bootstrap interval of each
run's test accuracy against S3-Router's over the test utterances (``predictions_test.csv``).
Several SUPERB tasks run one after the other, and their tables and plots are also gathered in
``<out>/SUPERB``.

    ./s3env python studies/per_task_storage/per_task_storage.py --splits train-10m --jobs 2
    ./s3env python studies/per_task_storage/per_task_storage.py --splits train-1h --epochs 5
        --lora-ranks 2 \
        --adapters 16 --top-blocks --jobs 1
    ./s3env python studies/per_task_storage/per_task_storage.py --recipe SUPERB/KS SUPERB/IC --lora-ranks 2 \
        --adapters 16 --jobs 1
    ./s3env python studies/per_task_storage/per_task_storage.py --report-only
"""

import argparse
import concurrent.futures
import csv
import json
import time
from pathlib import Path

from s3brain.compare.launch import run_strategy
from s3brain.compare.tables import interval_text, markdown_table, mean_std_text

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "LibriSpeech"
METRICS = ("wer_test_clean", "wer_test_other", "wer_test_clean_lm", "wer_test_other_lm")
SUPERB_TASKS = ("SUPERB/KS", "SUPERB/IC", "SUPERB/SID", "SUPERB/PR")
#: the run every SUPERB row's bootstrap interval is against (its folder name's start)
SUPERB_REFERENCE = "s3router"


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
        base = {"train_splits": f"[{split}]", "seed": args.seed, **args.common}
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


def superb_jobs_for(args, task):
    """``(name, folder, yaml, overrides, recipe)`` of every run of the sweep on a SUPERB task
    (``SUPERB/KS``): each yaml's own epochs unless ``--epochs``; no partial fine-tuning (the
    SUPERB recipes have no top_blocks.yaml).

    Arguments
    ---------
    args : argparse.Namespace
        The command line.
    task : str
        ``SUPERB/KS``, ``SUPERB/IC``, ``SUPERB/SID`` or ``SUPERB/PR``.

    Returns
    -------
    list of tuple
    """
    base = {"seed": args.seed, **args.common}
    if args.epochs:
        base["number_of_epochs"] = args.epochs
    root, recipe = superb_out(args.out, task), REPO / "recipes" / task
    jobs = [(f"{task}/weight_ft", root / "weight_ft", "weight_ft.yaml", base, recipe)]
    for sparsity in args.s3router_sparsities:
        jobs.append((f"{task}/s3router {sparsity}", root / f"s3router_{sparsity}", "s3router.yaml",
                     {**base, "sparsity": sparsity}, recipe))
    for rank in args.lora_ranks:
        jobs.append((f"{task}/lora r{rank}", root / f"lora_r{rank}", "lora.yaml",
                     {**base, "lora_rank": rank, "lora_alpha": float(rank)}, recipe))
    for width in args.adapters:
        jobs.append((f"{task}/adapter {width}", root / f"adapter_{width}", "adapter.yaml",
                     {**base, "adapter_bottleneck": width}, recipe))
    return jobs


def superb_out(out, task):
    """The sweep's folder of a SUPERB task: ``<out>/SUPERB_KS`` for ``SUPERB/KS``."""
    return Path(out) / task.replace("/", "_")


def run(job):
    """Run one job unless it is done.

    Arguments
    ---------
    job : tuple
        ``(name, folder, yaml, overrides)``, and the recipe folder for a SUPERB job.

    Returns
    -------
    tuple
        ``(name, results or None, seconds)``.
    """
    name, folder, yaml, overrides, *recipe = job
    start = time.time()
    results, status = run_strategy(recipe[0] if recipe else RECIPE, yaml, folder,
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


def correct_per_utterance(folder):
    """``{utterance ID: (1 if every target is right else 0, 1)}`` of a SUPERB run's test pass
    (``predictions_test.csv``), in the ``(errors, words)`` form of ``s3brain.compare.stats``: the
    "error rate" of these counts is the run's accuracy, so ``paired_bootstrap`` over them gives
    the accuracy difference in points.

    Arguments
    ---------
    folder : Path
        The run's folder.

    Returns
    -------
    dict or None
        None when the run wrote no predictions.
    """
    path = Path(folder) / "predictions_test.csv"
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    targets = [c[: -len("_predicted")] for c in rows[0] if c.endswith("_predicted")]
    return {r["ID"]: (int(all(r[f"{t}_predicted"] == r[f"{t}_true"] for t in targets)), 1)
            for r in rows}


def collect_superb(out):
    """The finished runs of a SUPERB task's sweep, one row each by bytes per task, with the
    paired bootstrap interval of the primary metric against S3-Router's run (``d_<metric>``;
    for accuracy only, over right/wrong per utterance; none when several sparsities ran).

    Arguments
    ---------
    out : Path
        The task's sweep folder (``<out>/SUPERB_KS``).

    Returns
    -------
    list of dict
    """
    from s3brain.compare.collect import finished_results, primary_metric
    from s3brain.compare.stats import paired_bootstrap

    found = {}
    for path in sorted(Path(out).glob("*/results.json")):
        results = finished_results(path.parent)
        if results is not None:
            found[path.parent] = results
    references = [f for f in found if f.name.startswith(SUPERB_REFERENCE)]
    reference = correct_per_utterance(references[0]) if len(references) == 1 else None
    rows = []
    for folder, results in found.items():
        metric = primary_metric(results)
        row = {"task": results.get("task"), "strategy": results["strategy"],
               "setting": knob(folder.name), "primary_metric": metric,
               "higher_is_better": results.get("higher_is_better"),
               **{k: results.get(k) for k in (
                   "storage_bytes_per_task", "storage_share_of_backbone", "params_trainable",
                   *(results.get("metric_keys") or [metric]), "train_seconds")}}
        mine = correct_per_utterance(folder)
        interval = None
        if (metric.startswith("accuracy") and reference is not None and mine is not None
                and folder not in references):
            accuracy = 100.0 * sum(c for c, _ in mine.values()) / len(mine)
            if abs(accuracy - results[metric]) > 0.006:  # not this result's pass (2 decimals)
                raise ValueError(f"{folder}: predictions_test.csv gives accuracy {accuracy:.2f}, "
                                 f"results.json {metric} {results[metric]}")
            interval = paired_bootstrap([reference], [mine])
        row[f"d_{metric}"] = interval
        rows.append(row)
    rows.sort(key=lambda r: r["storage_bytes_per_task"])
    return rows


def plot_superb(tasks, path):
    """Each task's primary metric against bytes per task (log x), one panel per task, one
    series per strategy; the y label says whether higher or lower is better.

    Arguments
    ---------
    tasks : dict
        ``{task name: collect_superb rows}``.
    path : Path
        The PNG file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    columns = min(len(tasks), 2)
    lines = -(-len(tasks) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5.5 * columns, 4 * lines), squeeze=False)
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    for ax, (task, rows) in zip(axes.flat, tasks.items()):
        metric = rows[0]["primary_metric"]
        for strategy in dict.fromkeys(r["strategy"] for r in rows):
            points = [r for r in rows if r["strategy"] == strategy and r[metric] is not None]
            ax.plot([p["storage_bytes_per_task"] for p in points], [p[metric] for p in points],
                    marker="*" if strategy == "weight_ft" else "o",
                    markersize=12 if strategy == "weight_ft" else 6, linestyle="none",
                    label=strategy)
            for p in points:
                if p["setting"]:
                    ax.annotate(p["setting"], (p["storage_bytes_per_task"], p[metric]),
                                fontsize=7, xytext=(3, 3), textcoords="offset points")
        better = "higher" if rows[0]["higher_is_better"] else "lower"
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels overlap
        ax.set_title(f"{task}: {metric} against storage per task")
        ax.set_xlabel("bytes per task (log scale)")
        ax.set_ylabel(f"{metric} % ({better} is better)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def write_superb_report(out, tasks):
    """The table (Markdown, CSV) and the plot of every finished run of each SUPERB task in
    ``tasks``, in the task's folder, and all of them together in ``<out>/SUPERB`` when there
    are several.

    Arguments
    ---------
    out : Path
        The sweep's folder (``--out``).
    tasks : list of str
        ``SUPERB/KS`` and the like.
    """
    found = {}
    for task in tasks:
        folder = superb_out(out, task)
        rows = collect_superb(folder)
        if not rows:
            print(f"{task}: no finished runs yet")
            continue
        found[task] = rows
        metric = rows[0]["primary_metric"]
        name = metric[: -len("_test")] if metric.endswith("_test") else metric
        write_superb_table(rows, folder)
        plot_superb({task: rows}, folder / f"{name}_vs_bytes_per_task.png")
    if len(found) > 1:
        folder = Path(out) / "SUPERB"
        folder.mkdir(parents=True, exist_ok=True)
        write_superb_table([r for rows in found.values() for r in rows], folder)
        plot_superb(found, folder / "metric_vs_bytes_per_task.png")


def write_superb_table(rows, folder):
    """``storage.csv`` (every column) and ``storage.md`` of SUPERB rows, printed too."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(folder / "storage.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows({k: interval_text(v) if isinstance(v, dict) else v
                          for k, v in r.items()} for r in rows)
    shown = [k for k in keys if k not in ("primary_metric", "higher_is_better")]
    table = markdown_table(rows, shown)
    (folder / "storage.md").write_text(table + "\n")
    print(table)


def comparison_table(pooled_by_recipe):
    """What one more task stores against what it gets right, from the recipes' comparison
    studies (``studies/*_comparison``: the yamls' defaults, three seeds): per recipe, its rows
    by bytes per task, the share of a whole fine-tuned model that is, the study's first metric
    (mean ± std over the seeds) and its difference against weight fine-tuning with the t
    interval over the seeds (``*`` excludes 0).

    Arguments
    ---------
    pooled_by_recipe : dict
        ``{recipe: (RecipeStudy, pooled rows)}`` (``tools/docs.py``'s ``STUDIES`` with their
        rows).

    Returns
    -------
    str
        A Markdown table.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> study = SimpleNamespace(spec=lambda: {"columns": {"wer": "WER"}, "intervals": {"wer": "WER"}})
    >>> rows = [{"name": "weight_ft", "storage_bytes_per_task": 8000, "wer": 80.0},
    ...         {"name": "s3router", "storage_bytes_per_task": 400, "wer": 83.0, "reference":
    ...          "weight_ft", "s_wer": {"difference": 3.0, "low": 1.0, "high": 5.0,
    ...          "excludes_zero": True}}]
    >>> print(comparison_table({"X": (study, rows)}).splitlines()[2])
    | X | `s3router` | 400 | 5.0 % | WER 83.00 | +3.00 [+1.00, +5.00] * |
    """
    lines = ["| recipe | hparams | bytes per task | share of a whole model | metric (mean ± std) "
             "| against `weight_ft` (seeds) |", "| --- | --- | --- | --- | --- | --- |"]
    for recipe, (study, pooled) in pooled_by_recipe.items():
        spec = study.spec()
        key, label = next(iter(spec["columns"].items()))
        interval = next(iter(spec["intervals"]))
        whole = next((r["storage_bytes_per_task"] for r in pooled if r["name"] == "weight_ft"),
                     None)
        for r in sorted(pooled, key=lambda r: r.get("storage_bytes_per_task") or 0):
            stored = r.get("storage_bytes_per_task")
            if stored is None:
                continue
            against = r.get(f"s_{interval}") if r.get("reference") == "weight_ft" else None
            lines.append(
                f"| {recipe} | `{r['name']}` | {stored:,.0f} | "
                + (f"{100 * stored / whole:.1f} %" if whole else "") + " | "
                + f"{label} {mean_std_text(r, key)} | "
                + (interval_text(against) if against else "") + " |")
    return "\n".join(lines)


def main():
    """Run (or reuse) the sweep's runs, then write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "per_task_storage")
    parser.add_argument("--recipe", nargs="+", default=["LibriSpeech"],
                        choices=["LibriSpeech", *SUPERB_TASKS],
                        help="LibriSpeech, or one or more SUPERB tasks, run in this order")
    parser.add_argument("--splits", nargs="*", default=["train-10m"],
                        help="LibriSpeech's training splits")
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument("--s3router-sparsities", nargs="*", default=["0.1"])
    parser.add_argument("--lora-ranks", nargs="*", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--adapters", nargs="*", type=int, default=[16, 64],
                        help="Houlsby bottleneck widths")
    parser.add_argument("--top-blocks", nargs="*", type=int, default=None,
                        help="partial fine-tuning: blocks trained from the top (LibriSpeech; "
                             "default 1)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="number_of_epochs for every run (default: each yaml's own: 30 "
                             "for LibriSpeech, 15 for SUPERB); "
                             "train-1h at 5 covers about as many updates as train-10m at 30")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an hparams override for every run (--set ssl_hub=<folder>)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.common = dict(item.split("=", 1) for item in args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.recipe != ["LibriSpeech"]:
        superb(parser, args)
        return
    if args.top_blocks is None:
        args.top_blocks = [1]
    if not args.report_only:
        jobs = jobs_for(args)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for name, results, seconds in pool.map(run, jobs):
                if results is not None:
                    print(f"{name}: WER {results['wer_test_clean']} "
                          f"({seconds / 60:.1f} min)", flush=True)
    write_report(args.out)


def superb(parser, args):
    """Run (or reuse) the sweep on each SUPERB task of ``--recipe``, then write its report."""
    if "LibriSpeech" in args.recipe:
        parser.error("--recipe: LibriSpeech runs alone, not with SUPERB tasks")
    if args.top_blocks:
        parser.error("--top-blocks: the SUPERB recipes have no top_blocks.yaml")
    if not args.report_only:
        for task in args.recipe:
            superb_out(args.out, task).mkdir(parents=True, exist_ok=True)
            with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
                for name, results, seconds in pool.map(run, superb_jobs_for(args, task)):
                    if results is not None:
                        metric = results["primary_metric"]
                        print(f"{name}: {metric} {results[metric]} ({seconds / 60:.1f} min)",
                              flush=True)
    write_superb_report(args.out, args.recipe)


if __name__ == "__main__":
    main()
