#!/usr/bin/env python3
"""S3-Router sparsity x mask-init sweep against weight fine-tuning, and the pruning methods,
on the LibriSpeech recipe; writes a Markdown table, a CSV and a PNG plot.

Every run is the recipe itself (``recipes/LibriSpeech/train.py``) in its own output folder; a run
whose ``results.json`` has test WERs is reused, not rerun, so an interrupted sweep continues.
Runs go ``--jobs`` at a time, one CPU thread each.

    ./s3env python benchmarks/s3router_sweep.py --splits train-10m            # the full grid
    ./s3env python benchmarks/s3router_sweep.py --splits train-1h --inits ori \\
        --set train-1h:number_of_epochs=6
    ./s3env python benchmarks/s3router_sweep.py --splits train-10m --pruning --inits \\
        --pruning-sparsities 0.3 0.6
    ./s3env python benchmarks/s3router_sweep.py --report-only                 # table and plot
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
PRUNING = ("s3router_p", "omp", "imp", "parp")
STRUCTURED = ("safari", "omp_structured", "parp_structured")


def run(job):
    """Run one recipe job unless it is done; return (name, results or None, seconds)."""
    name, folder, yaml, overrides = job
    start = time.time()
    results, status = run_strategy(RECIPE, yaml, folder, [f"--{k}={v}" for k, v in overrides.items()],
                                   threads=1, log_name="sweep.log")
    if results is None:
        print(f"{name}: {status}", flush=True)
    return name, results, 0.0 if status == "ok (reused)" else time.time() - start


def jobs_for(args):
    extra = {}
    for item in args.set:
        split, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        extra.setdefault(split, {})[key] = value
    jobs = []
    for split in args.splits:
        base = {"train_splits": f"[{split}]", **extra.get(split, {})}
        root = args.out / split
        if args.baseline:
            jobs.append((f"{split}/weight_ft", root / "weight_ft", "weight_ft.yaml", base))
        for init in args.inits:
            for sparsity in args.sparsities:
                jobs.append((f"{split}/s3router {init} {sparsity}", root / f"s3router_{init}_{sparsity}",
                             "s3router.yaml", {**base, "mask_init": init, "sparsity": sparsity}))
        groups = [(PRUNING, args.pruning_sparsities)] if args.pruning else []
        if args.structured:
            groups.append((STRUCTURED, args.structured_sparsities))
        for methods, sparsities in groups:
            for method in methods:
                for sparsity in sparsities:
                    jobs.append((f"{split}/{method} {sparsity}", root / f"{method}_{sparsity}",
                                 f"{method}.yaml", {**base, "sparsity": sparsity,
                                                    "init_from": root / "weight_ft"}))
    return jobs


def collect(out):
    rows = []
    for path in sorted(Path(out).glob("*/*/results.json")):
        results = json.loads(path.read_text())
        if results.get("wer_test_clean") is None:
            continue
        folder = path.parent.name
        init = folder.split("_")[1] if folder.startswith("s3router_") and "_p_" not in folder \
            else ""
        rows.append({"split": path.parent.parent.name, "strategy": results["strategy"],
                     "init": init, **{k: results.get(k) for k in (
                         "sparsity", "sparsity_linear", "wer_test_clean", "wer_test_other",
                         "wer_test_clean_lm", "wer_test_other_lm", "cer_test_clean",
                         "params_trainable", "params_total", "flops_10s", "latency_ms_10s",
                         "storage_bytes_per_task", "train_seconds")}})
    rows.sort(key=lambda r: (r["split"], r["strategy"] != "weight_ft", r["strategy"], r["init"],
                             r["sparsity"] or 0))
    return rows


def write_report(out):
    rows = collect(out)
    if not rows:
        print("no finished runs yet")
        return
    columns = list(rows[0])
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    shown = ["split", "strategy", "init", "sparsity", "wer_test_clean", "wer_test_other",
             "wer_test_clean_lm", "wer_test_other_lm", "storage_bytes_per_task"]
    table = markdown_table(rows, shown)
    (out / "sweep.md").write_text(table + "\n")
    print(table)
    pivot = pivot_table(rows)
    (out / "sweep_pivot.md").write_text(pivot + "\n")
    print(pivot)
    plot(rows, out / "sweep.png")
    structured = [r for r in rows if r["strategy"] in STRUCTURED + ("weight_ft",)]
    if any(r["strategy"] in STRUCTURED for r in structured):
        table = structured_table(structured)
        (out / "structured.md").write_text(table + "\n")
        print(table)
        plot_flops(structured, out / "structured_wer_vs_flops.png")


def structured_table(rows):
    """WER against FLOPs and measured latency of the physically shrunk models, per split."""
    lines = ["| split | method | sparsity | GFLOPs / 10 s | FLOPs saved | params | CPU ms / 10 s "
             "| WER clean / other | WER LM clean / other |", "|---" * 9 + "|"]
    for split in sorted({r["split"] for r in rows}):
        mine = [r for r in rows if r["split"] == split]
        dense = next((r for r in mine if r["strategy"] == "weight_ft"), None)
        for r in mine:
            saved = f"{1 - r['flops_10s'] / dense['flops_10s']:.1%}" if dense else ""
            lines.append(
                f"| {split} | {r['strategy']} | {r['sparsity'] or 0:g} | {r['flops_10s'] / 1e9:.2f} "
                f"| {saved} | {r['params_total'] / 1e6:.2f} M | {r['latency_ms_10s']:.0f} "
                f"| {r['wer_test_clean']} / {r['wer_test_other']} "
                f"| {r['wer_test_clean_lm']} / {r['wer_test_other_lm']} |")
    return "\n".join(lines)


def plot_flops(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = sorted({r["split"] for r in rows})
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        mine = [r for r in rows if r["split"] == split]
        for r in mine:
            if r["strategy"] == "weight_ft":
                ax.scatter(r["flops_10s"] / 1e9, r["wer_test_clean"], color="k", marker="*",
                           s=120, label="weight fine-tuning (dense)", zorder=3)
        for method in STRUCTURED:
            points = sorted((r for r in mine if r["strategy"] == method),
                            key=lambda r: r["flops_10s"])
            if points:
                ax.plot([p["flops_10s"] / 1e9 for p in points],
                        [p["wer_test_clean"] for p in points], marker="o", label=method)
                for p in points:
                    ax.annotate(f"{p['sparsity']:g}", (p["flops_10s"] / 1e9, p["wer_test_clean"]),
                                fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(f"{split}: structured pruning (labels: sparsity)")
        ax.set_xlabel("GFLOPs for 10 s of audio (shrunk model)")
        ax.set_ylabel("test-clean WER % (greedy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def pivot_table(rows):
    """Per split: one row per mask init, one column per sparsity; cells are test-clean /
    test-other WER, greedy then with the LM; weight fine-tuning above the table."""
    def cell(r):
        return (f"{r['wer_test_clean']} / {r['wer_test_other']}<br>"
                f"LM {r['wer_test_clean_lm']} / {r['wer_test_other_lm']}")

    lines = []
    for split in sorted({r["split"] for r in rows}):
        mine = [r for r in rows if r["split"] == split]
        sparsities = sorted({r["sparsity"] for r in mine if r["strategy"] == "s3router"})
        lines += [f"**{split}** (WER test-clean / test-other; greedy, then 4-gram LM)", ""]
        for r in mine:
            if r["strategy"] == "weight_ft":
                lines += [f"Weight fine-tuning: {cell(r).replace('<br>', ', ')}", ""]
        lines += ["| | " + " | ".join(f"sparsity {s:g}" for s in sparsities) + " |",
                  "|---" * (len(sparsities) + 1) + "|"]
        for init in ("ori", "ri", "wmi"):
            by_sparsity = {r["sparsity"]: r for r in mine
                           if r["strategy"] == "s3router" and r["init"] == init}
            if by_sparsity:
                cells = [cell(by_sparsity[s]) if s in by_sparsity else "" for s in sparsities]
                lines.append(f"| S3-Router {init.upper()} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = sorted({r["split"] for r in rows})
    panels = [(split, key, label) for split in splits for key, label in (
        ("wer_test_clean", "greedy"), ("wer_test_clean_lm", "4-gram LM"))]
    # one row per split: greedy on the left, the LM on the right
    fig, axes = plt.subplots(len(splits), 2, figsize=(10, 4 * len(splits)), squeeze=False)
    for ax, (split, key, label) in zip(axes.flat, panels):
        mine = [r for r in rows if r["split"] == split and r[key] is not None]
        for r in mine:
            if r["strategy"] == "weight_ft":
                ax.axhline(r[key], color="k", ls="--", label="weight fine-tuning")
        series = {}
        for r in mine:
            if r["strategy"] == "s3router":
                series.setdefault(f"S3-Router {r['init'].upper()}", []).append(r)
            elif r["strategy"] in PRUNING:
                series.setdefault(r["strategy"], []).append(r)
        for name, points in sorted(series.items()):
            points.sort(key=lambda r: r["sparsity"])
            ax.plot([p["sparsity"] for p in points], [p[key] for p in points],
                    marker="o", ls=":" if name in PRUNING else "-", label=name)
        ax.set_title(f"{split}: test-clean WER, {label}")
        ax.set_xlabel("sparsity (share of masked weights removed)")
        ax.set_ylabel("WER %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "s3router_sweep")
    parser.add_argument("--splits", nargs="*", default=["train-10m"])
    parser.add_argument("--inits", nargs="*", default=["ori", "ri", "wmi"])
    parser.add_argument("--sparsities", nargs="*", default=["0.02", "0.05", "0.1", "0.2", "0.3"])
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the weight fine-tuning run")
    parser.add_argument("--pruning", action="store_true",
                        help="also S3-Router-P, OMP, IMP and PARP from the weight_ft run")
    parser.add_argument("--pruning-sparsities", nargs="*", default=["0.5"])
    parser.add_argument("--structured", action="store_true",
                        help="also SAFARI and structured OMP / PARP from the weight_ft run")
    parser.add_argument("--structured-sparsities", nargs="*", default=["0.2", "0.3", "0.5"])
    parser.add_argument("--set", action="append", default=[], metavar="SPLIT:KEY=VALUE",
                        help="an hparams override for one split's runs")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        jobs = jobs_for(args)
        # The pruning runs start from the weight fine-tuning run: it goes first, they go last
        # and wait for it.
        pruning = [j for j in jobs if j[2].removesuffix(".yaml") in PRUNING + STRUCTURED]
        plain = [j for j in jobs if j not in pruning]
        with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(run, job): job for job in plain}
            if pruning:
                concurrent.futures.wait([f for f, j in futures.items() if j[2] == "weight_ft.yaml"])
                futures.update({pool.submit(run, job): job for job in pruning})
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                name, results, seconds = future.result()
                wer = results and (results["wer_test_clean"], results["wer_test_other"])
                print(f"[{done}/{len(futures)}] {name}: WER clean/other {wer} "
                      f"({seconds / 60:.1f} min)", flush=True)
    write_report(args.out)


if __name__ == "__main__":
    main()
