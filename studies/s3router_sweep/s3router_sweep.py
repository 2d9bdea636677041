#!/usr/bin/env python3
"""S3-Router sparsity x mask-init sweep against weight fine-tuning, and the pruning methods,
on the LibriSpeech recipe; writes a Markdown table, a CSV and a PNG plot.

Every run is the recipe itself (``recipes/LibriSpeech/train.py``) in its own output folder; a run
whose ``results.json`` has test WERs is reused, not rerun, so an interrupted sweep continues.
Runs go ``--jobs`` at a time, one CPU thread each.

    ./s3env python studies/s3router_sweep/s3router_sweep.py --splits train-10m            # the
    full grid ./s3env python studies/s3router_sweep/s3router_sweep.py --splits train-1h --inits ori
        \\
        --set train-1h:number_of_epochs=6
    ./s3env python studies/s3router_sweep/s3router_sweep.py --splits train-10m --pruning --inits \\
        --pruning-sparsities 0.3 0.6
    ./s3env python studies/s3router_sweep/s3router_sweep.py --report-only                 # table and plot

Seeds, the score learning rate and PARP's prune interval (the settings behind the papers'
claims):

    # every cell once per seed: mean +- std, and the paired bootstrap 95 % interval of the WER
    # difference against the split's weight fine-tuning, over the test utterances of all seeds
    ./s3env python studies/s3router_sweep/s3router_sweep.py --splits train-10m --seeds 1986 1987 1988
    # where does the init matter, and which score learning rate is best (sparsity 0.1)
    ./s3env python studies/s3router_sweep/s3router_sweep.py --splits train-10m --sparsities 0.1 \\
        --inits ori ri wmi --score-lrs 5e-5 1e-4 1e-3 1e-2 --seeds 1986 1987 1988
    # PARP re-pruning every step against every 50 steps
    ./s3env python studies/s3router_sweep/s3router_sweep.py --splits train-10m --inits --pruning \\
        --structured --prune-intervals 1 50 --seeds 1986 1987 1988

- ``--seeds S ...``: each run once per seed (``--seed=S``). The seed the yamls default to (1986)
  keeps the folder a run without ``--seeds`` has (``<out>/<split>/<cell>``), so runs made before
  are reused as that seed; every other seed runs in ``<out>/<split>/seed<S>/<cell>``. The pooled
  table ``sweep_seeds.md`` (and ``.csv``, ``sweep_seeds.png`` with error bars) gives each WER as
  mean +- std over the seeds and ``d_wer_test_clean`` / ``d_wer_test_other``: the difference
  against weight fine-tuning of the same split and seeds with its paired bootstrap 95 % interval
  over the test utterances pooled over the seeds (``s3brain.compare.stats``), ``*`` where it excludes 0.
  Without ``--seeds`` the folders and tables are exactly those of a single run.
- ``--score-lrs LR ...``: also S3-Router at ``--score-lr-sparsity`` (0.1) for every init and
  every learning rate of the mask scores (the yaml's ``lr_ssl``: the backbone optimizer holds
  only the scores, the weights are frozen), in ``s3router_<init>_<sparsity>_lr<LR>``; the
  yaml's own value (0.01) is the plain ``s3router_<init>_<sparsity>`` run. ``score_lr.md`` has
  one row per (lr, init) and says, for each lr, whether the inits' intervals overlap and how
  each init compares with ORI (paired intervals by utterances and, with ``--seeds``, over the
  seeds), and which lr is best per init.
- ``--prune-intervals N ...``: PARP and structured PARP re-prune every N steps
  (``prune_interval_steps``; the yaml's 50 is the plain folder, others ``<method>_<sp>_pi<N>``).
- ``--executor local|slurm`` (and ``--slurm-partition``, ``--timeout-min``): each run goes to
  submitit (``s3brain.compare.SubmititLauncher``), ``--jobs`` in flight at once.
"""

import argparse
import collections
import concurrent.futures
import csv
import json
import time
from pathlib import Path

from s3brain.compare.collect import finished_results, pooled_over_seeds, row_for
from s3brain.compare.launch import add_executor_options, launcher_for, run_strategy
from s3brain.compare.tables import markdown_table

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "LibriSpeech"
PRUNING = ("s3router_p", "omp", "imp", "parp")
STRUCTURED = ("safari", "omp_structured", "parp_structured")
#: the methods with a prune interval (``prune_interval_steps``)
INTERVAL_METHODS = ("parp", "parp_structured")
#: the keys of the S3-Router scores' learning rate and of PARP's prune interval
SCORE_LR_KEY, INTERVAL_KEY = "lr_ssl", "prune_interval_steps"
#: one run of the sweep: ``name`` for messages, ``folder``, ``yaml``, ``overrides`` (hparams
#: keys and values), the ``split``, the ``cell`` (the run's folder name, the same for every
#: seed) and the ``seed`` (None: the yaml's)
Job = collections.namedtuple("Job", "name folder yaml overrides split cell seed")


def yaml_default(yaml, key):
    """The value of a top-level ``key`` in a LibriSpeech hparams file, as text (None if absent).

    Example
    -------
    >>> yaml_default("s3router.yaml", "lr_ssl"), yaml_default("weight_ft.yaml", "seed")
    ('0.01', '1986')
    """
    for line in (RECIPE / "hparams" / yaml).read_text().splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].split("#")[0].strip()
    return None


def is_default(value, yaml, key):
    """Whether ``value`` is the yaml's own value of ``key`` (compared as numbers)."""
    default = yaml_default(yaml, key)
    return default is not None and float(value) == float(default)


DEFAULT_SEED = yaml_default("weight_ft.yaml", "seed")


def seed_root(root, seed):
    """Where a split's runs of ``seed`` live: the split's folder for no seed and for the yamls'
    own seed (so runs made without ``--seeds`` are reused as that seed), else ``seed<S>/``."""
    if seed is None or str(seed) == DEFAULT_SEED:
        return Path(root)
    return Path(root) / f"seed{seed}"


def run(job, launcher=None):
    """Run one recipe job unless it is done; return (name, results or None, seconds)."""
    start = time.time()
    results, status = run_strategy(RECIPE, job.yaml, job.folder,
                                   [f"--{k}={v}" for k, v in job.overrides.items()],
                                   threads=1, log_name="sweep.log", launcher=launcher)
    if results is None:
        print(f"{job.name}: {status}", flush=True)
    return job.name, results, 0.0 if status == "ok (reused)" else time.time() - start


def jobs_for(args):
    """Every run of the sweep (``Job``), seed by seed within each split; the weight fine-tuning
    run of a split and seed first, the runs that start from it (``init_from``) after it."""
    extra = {}
    for item in args.set:
        split, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        extra.setdefault(split, {})[key] = value
    seeds = getattr(args, "seeds", None) or [None]
    score_lrs = getattr(args, "score_lrs", None) or []
    intervals = getattr(args, "prune_intervals", None) or [None]
    jobs = []
    for split in args.splits:
        for seed in seeds:
            base = {"train_splits": f"[{split}]", **extra.get(split, {})}
            if seed is not None:
                base["seed"] = seed
            root = seed_root(args.out / split, seed)
            tag = "" if seed is None else f" (seed {seed})"

            def add(name, cell, yaml, overrides):
                jobs.append(Job(f"{split}/{name}{tag}", root / cell, yaml, overrides, split,
                                cell, seed))

            if args.baseline:
                add("weight_ft", "weight_ft", "weight_ft.yaml", base)
            cells = [(init, sparsity, None) for init in args.inits for sparsity in args.sparsities]
            cells += [(init, getattr(args, "score_lr_sparsity", "0.1"), lr)
                      for lr in score_lrs for init in args.inits]
            seen = set()
            for init, sparsity, lr in cells:
                cell, name = f"s3router_{init}_{sparsity}", f"s3router {init} {sparsity}"
                overrides = {**base, "mask_init": init, "sparsity": sparsity}
                if lr is not None and not is_default(lr, "s3router.yaml", SCORE_LR_KEY):
                    cell, name = f"{cell}_lr{lr}", f"{name} score lr {lr}"
                    overrides[SCORE_LR_KEY] = lr
                if cell not in seen:
                    seen.add(cell)
                    add(name, cell, "s3router.yaml", overrides)
            groups = [(PRUNING, args.pruning_sparsities)] if args.pruning else []
            if args.structured:
                groups.append((STRUCTURED, args.structured_sparsities))
            for methods, sparsities in groups:
                for method in methods:
                    for sparsity in sparsities:
                        for interval in intervals if method in INTERVAL_METHODS else [None]:
                            cell, name = f"{method}_{sparsity}", f"{method} {sparsity}"
                            overrides = {**base, "sparsity": sparsity,
                                         "init_from": root / "weight_ft"}
                            if interval is not None and not is_default(
                                    interval, f"{method}.yaml", INTERVAL_KEY):
                                cell, name = f"{cell}_pi{interval}", f"{name} every {interval}"
                                overrides[INTERVAL_KEY] = interval
                            add(name, cell, f"{method}.yaml", overrides)
    return jobs


def describe(cell):
    """The mask init, score learning rate and prune interval a run's folder name gives (None
    where it is not an axis of that run, or the yaml's value).

    Example
    -------
    >>> describe("s3router_wmi_0.1_lr1e-3"), describe("parp_0.5_pi1"), describe("s3router_p_0.5")
    (('wmi', '1e-3', None), ('', None, '1'), ('', None, None))
    """
    s3router = cell.startswith("s3router_") and not cell.startswith("s3router_p_")
    init = cell.split("_")[1] if s3router else ""
    score_lr = cell.rsplit("_lr", 1)[1] if s3router and "_lr" in cell else None
    interval = cell.rsplit("_pi", 1)[1] if "_pi" in cell else None
    return init, score_lr, interval


def collect(out):
    rows = []
    for path in sorted(Path(out).glob("*/*/results.json")):
        results = json.loads(path.read_text())
        if results.get("wer_test_clean") is None:
            continue
        init, score_lr, interval = describe(path.parent.name)
        rows.append({"split": path.parent.parent.name, "strategy": results["strategy"],
                     "init": init, "score_lr": score_lr, "prune_interval": interval,
                     **{k: results.get(k) for k in (
                         "sparsity", "sparsity_linear", "wer_test_clean", "wer_test_other",
                         "wer_test_clean_lm", "wer_test_other_lm", "cer_test_clean",
                         "params_trainable", "params_total", "flops_10s", "latency_ms_10s",
                         "storage_bytes_per_task", "train_seconds")}})
    rows.sort(key=lambda r: (r["split"], r["strategy"] != "weight_ft", r["strategy"], r["init"],
                             r["sparsity"] or 0, float(r["score_lr"] or 0),
                             float(r["prune_interval"] or 0)))
    return rows


def axis_columns(rows):
    """The axes (``score_lr``, ``prune_interval``) some row has; none for a plain sweep, whose
    tables then stay as they were before the axes existed."""
    return [k for k in ("score_lr", "prune_interval") if any(r.get(k) is not None for r in rows)]


def method_label(r):
    """A pruning method's name, with its prune interval when that is not the yaml's."""
    interval = r.get("prune_interval")
    return r["strategy"] + (f" (every {interval} steps)" if interval is not None else "")


def write_report(out):
    rows = collect(out)
    if not rows:
        print("no finished runs yet")
        return
    axes = axis_columns(rows)
    columns = [c for c in rows[0] if c not in ("score_lr", "prune_interval") or c in axes]
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    shown = ["split", "strategy", "init", *axes, "sparsity", "wer_test_clean", "wer_test_other",
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
                f"| {split} | {method_label(r)} | {r['sparsity'] or 0:g} "
                f"| {r['flops_10s'] / 1e9:.2f} "
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
        series = {}
        for r in mine:
            if r["strategy"] in STRUCTURED:
                series.setdefault(method_label(r), []).append(r)
        for label, points in sorted(series.items()):
            points.sort(key=lambda r: r["flops_10s"])
            ax.plot([p["flops_10s"] / 1e9 for p in points],
                    [p["wer_test_clean"] for p in points], marker="o", label=label)
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
    test-other WER, greedy then with the LM; weight fine-tuning above the table (S3-Router at
    the yaml's score learning rate: the other rates are in ``score_lr.md``)."""
    def cell(r):
        return (f"{r['wer_test_clean']} / {r['wer_test_other']}<br>"
                f"LM {r['wer_test_clean_lm']} / {r['wer_test_other_lm']}")

    lines = []
    for split in sorted({r["split"] for r in rows}):
        mine = [r for r in rows if r["split"] == split and r.get("score_lr") is None]
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
    """WER against sparsity per split (greedy left, LM right): S3-Router per init at the yaml's
    score learning rate, the pruning methods, weight fine-tuning as a line; error bars (and a
    band for weight fine-tuning) when the rows are pooled over seeds (``<key>_std``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = sorted({r["split"] for r in rows})
    panels = [(split, key, label) for split in splits for key, label in (
        ("wer_test_clean", "greedy"), ("wer_test_clean_lm", "4-gram LM"))]
    # one row per split: greedy on the left, the LM on the right
    fig, axes = plt.subplots(len(splits), 2, figsize=(10, 4 * len(splits)), squeeze=False)
    for ax, (split, key, label) in zip(axes.flat, panels):
        mine = [r for r in rows if r["split"] == split and r.get(key) is not None]
        for r in mine:
            if r["strategy"] == "weight_ft":
                ax.axhline(r[key], color="k", ls="--", label="weight fine-tuning")
                if r.get(f"{key}_std"):
                    ax.axhspan(r[key] - r[f"{key}_std"], r[key] + r[f"{key}_std"], color="k",
                               alpha=0.1)
        series = {}
        for r in mine:
            if r["strategy"] == "s3router" and r.get("score_lr") is None:
                series.setdefault(f"S3-Router {r['init'].upper()}", []).append(r)
            elif r["strategy"] in PRUNING:
                series.setdefault(method_label(r), []).append(r)
        for name, points in sorted(series.items()):
            points.sort(key=lambda r: r["sparsity"])
            ax.errorbar([p["sparsity"] for p in points], [p[key] for p in points],
                        yerr=[p.get(f"{key}_std") or 0 for p in points], capsize=3,
                        marker="o", ls="-" if name.startswith("S3-Router") else ":", label=name)
        ax.set_title(f"{split}: test-clean WER, {label}")
        ax.set_xlabel("sparsity (share of masked weights removed)")
        ax.set_ylabel("WER %")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


def pooled(jobs, out, seeds):
    """One row per (split, run folder) of ``jobs`` from its runs over ``seeds``
    (``s3brain.compare.pooled_over_seeds``): each WER as the mean with ``<key>_std`` (no std for
    a single seed), ``status`` (seeds finished), and ``d_wer_test_clean`` / ``d_wer_test_other``:
    the paired bootstrap interval of the WER difference against the split's ``weight_ft`` runs
    of the same seeds, over the test utterances of all seeds (None for weight fine-tuning itself
    and where no pair of runs has finished).

    Arguments
    ---------
    jobs : list of Job
        The sweep (``jobs_for``).
    out : Path
        The sweep's folder.
    seeds : list
        The seeds (``[None]``: the runs without ``--seeds``).

    Returns
    -------
    list of dict
    """
    rows = []
    for split in dict.fromkeys(j.split for j in jobs):
        cells = {}
        for job in jobs:
            if job.split == split:
                cells.setdefault(job.cell, job)

        def folder_of(seed, cell, split=split):
            return seed_root(Path(out) / split, seed) / cell

        per_seed = {}
        for seed in seeds:
            per_seed[seed] = []
            for cell in cells:
                results = finished_results(folder_of(seed, cell))
                per_seed[seed].append(row_for(cell, results, "ok" if results else "not finished"))
        for row, (cell, job) in zip(
                pooled_over_seeds(per_seed, Path(out) / split, "weight_ft",
                                  ("test-clean", "test-other"), folder_of), cells.items()):
            init, score_lr, interval = describe(cell)
            row.update(split=split, strategy=job.yaml.removesuffix(".yaml"), init=init,
                       score_lr=score_lr, prune_interval=interval,
                       sparsity=float(job.overrides.get("sparsity", 0.0)),
                       folders=[folder_of(seed, cell) for seed in seeds])
            for key in [k for k in row if k.endswith("_std")]:
                if len(seeds) == 1 or not key.startswith(("wer_", "cer_")):
                    del row[key]  # one seed has no spread; counts do not vary
            rows.append(row)
    return rows


SEED_COLUMNS = ["split", "strategy", "init", "sparsity", "status", "wer_test_clean",
                "d_wer_test_clean", "s_wer_test_clean", "wer_test_other", "d_wer_test_other",
                "s_wer_test_other", "wer_test_clean_lm", "wer_test_other_lm",
                "storage_bytes_per_task"]


def write_seeds_report(rows, out, seeds):
    """``sweep_seeds.md`` / ``.csv`` and ``sweep_seeds.png`` from the pooled rows."""
    from s3brain.compare.tables import write_tables

    axes = axis_columns(rows)
    columns = SEED_COLUMNS[:3] + axes + SEED_COLUMNS[3:]
    write_tables([{k: v for k, v in r.items() if k != "folders"} for r in rows], out,
                 "sweep_seeds", columns)
    plot(rows, out / "sweep_seeds.png")
    text = markdown_table(rows, columns) + (
        f"\n\n+- : std over seeds {' '.join(map(str, seeds))}; d_wer: WER difference against "
        "weight fine-tuning of the same split, paired bootstrap 95 % interval over the test "
        "utterances of every seed; * = the interval excludes 0.")
    (out / "sweep_seeds.md").write_text(text + "\n")
    print(text)


def intervals_overlap(intervals):
    """Whether every two of the intervals overlap (on a line: the largest low is at most the
    smallest high).

    Example
    -------
    >>> intervals_overlap([{"low": -1, "high": 2}, {"low": 1.5, "high": 3}])
    True
    >>> intervals_overlap([{"low": -1, "high": 1}, {"low": 1.5, "high": 3}])
    False
    """
    return max(i["low"] for i in intervals) <= min(i["high"] for i in intervals)


def score_lr_rows(rows, sparsity):
    """The S3-Router rows at ``sparsity`` (every init and score learning rate), the yaml's own
    rate filled in, sorted by rate then init."""
    default = yaml_default("s3router.yaml", SCORE_LR_KEY)
    order = {"ori": 0, "ri": 1, "wmi": 2}
    mine = [{**r, "score_lr": r["score_lr"] or default} for r in rows
            if r["strategy"] == "s3router" and r["sparsity"] == float(sparsity)]
    return sorted(mine, key=lambda r: (r["split"], float(r["score_lr"]),
                                       order.get(r["init"], 3), r["init"]))


def score_lr_findings(rows, split="test-clean"):
    """For each score learning rate: do the inits' intervals (against weight fine-tuning)
    overlap, and each init against ORI (paired over the same utterances and seeds, and with two
    seeds or more over the seeds' differences, training noise counted); per init, the rate with
    the lowest mean WER, against each other rate (paired the same two ways). ``rows``:
    ``score_lr_rows`` of one split."""
    from s3brain.compare.tables import interval_text

    key = f"wer_{split.replace('-', '_')}"
    tag, seeds_tag = f"d_{key}", f"s_{key}"  # utterance bootstrap, interval over seeds
    lines = []
    for lr in dict.fromkeys(r["score_lr"] for r in rows):
        at = [r for r in rows if r["score_lr"] == lr]
        shown = [r for r in at if r.get(tag)]
        if len(shown) < 2:
            lines.append(f"- score lr {lr}: fewer than two inits finished")
            continue
        overlap = intervals_overlap([r[tag] for r in shown])
        line = (f"- score lr {lr}: the inits' intervals against weight fine-tuning "
                f"{'overlap' if overlap else 'do not overlap'} (" + ", ".join(
                    f"{r['init'].upper()} {interval_text(r[tag])}" for r in shown) + ")")
        over_seeds = [r for r in shown if r.get(seeds_tag)]
        if len(over_seeds) > 1:
            overlap = intervals_overlap([r[seeds_tag] for r in over_seeds])
            line += (f", over seeds {'overlap' if overlap else 'do not overlap'} (" + ", ".join(
                f"{r['init'].upper()} {interval_text(r[seeds_tag])}" for r in over_seeds) + ")")
        ori = next((r for r in at if r["init"] == "ori"), None)
        against = [d for d in (paired_difference(ori, r, split, r["init"].upper(), "ORI")
                                for r in at if ori is not None and r is not ori) if d]
        lines.append(line + ("; paired: " + ", ".join(against) if against else ""))
    for init in dict.fromkeys(r["init"] for r in rows):
        done = [r for r in rows if r["init"] == init and r.get(key) is not None]
        if done:
            best = min(done, key=lambda r: r[key])
            others = [d for d in (paired_difference(r, best, split, f"lr {best['score_lr']}",
                                                    f"lr {r['score_lr']}")
                                  for r in done if r is not best) if d]
            lines.append(f"- {init.upper()}: lowest mean {key} at score lr {best['score_lr']} "
                         f"({best[key]:.2f})" + ("; paired: " + ", ".join(others) if others
                                                  else ""))
    return lines


def paired_difference(reference, system, split, name, reference_name):
    """``<name> - <reference_name> <utterance interval> (over seeds <t interval>)``: the WER
    difference of two sweep rows on ``split``, paired by utterances over every seed where both
    runs finished, and over the seeds (two or more); None when no pair has finished."""
    from s3brain.compare.stats import paired_bootstrap_files, seed_interval_files
    from s3brain.compare.tables import interval_text

    files = [(a / f"wer_{split}.txt", b / f"wer_{split}.txt")
             for a, b in zip(reference["folders"], system["folders"])]
    paired = paired_bootstrap_files(files)
    if not paired:
        return None
    seeds = seed_interval_files(files)
    return f"{name} - {reference_name} {interval_text(paired)}" + (
        f" (over seeds {interval_text(seeds)})" if seeds else "")


def write_score_lr_report(rows, out, sparsity, seeds):
    """``score_lr.md`` (one row per score learning rate and init, and the findings) and
    ``score_lr.png`` (WER against the rate per init, error bars over seeds)."""
    mine = score_lr_rows(rows, sparsity)
    if not mine:
        return
    columns = ["split", "score_lr", "init", "status", "wer_test_clean", "d_wer_test_clean",
               "s_wer_test_clean", "wer_test_other", "d_wer_test_other", "wer_test_clean_lm"]
    text = [f"S3-Router at sparsity {sparsity}: test WER (mean +- std over seeds "
            f"{' '.join(str(s) for s in seeds if s is not None) or DEFAULT_SEED}) and its "
            "difference from weight fine-tuning (d_: paired bootstrap 95 % interval over the "
            "test utterances of every seed; s_: t interval over the seeds' differences; "
            "* = excludes 0).", "", markdown_table(mine, columns)]
    for split in dict.fromkeys(r["split"] for r in mine):
        text += ["", f"**{split}** (test-clean)"]
        text += score_lr_findings([r for r in mine if r["split"] == split])
    (out / "score_lr.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    plot_score_lr(mine, [r for r in rows if r["strategy"] == "weight_ft"], out / "score_lr.png")


def plot_score_lr(rows, dense, path):
    """Test-clean WER against the score learning rate (log axis), one line per init."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(dict.fromkeys(r["split"] for r in rows))
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        for r in dense:
            if r["split"] == split and r.get("wer_test_clean") is not None:
                ax.axhline(r["wer_test_clean"], color="k", ls="--", label="weight fine-tuning")
        for init in dict.fromkeys(r["init"] for r in rows):
            points = [r for r in rows if r["split"] == split and r["init"] == init
                      and r.get("wer_test_clean") is not None]
            if points:
                ax.errorbar([float(p["score_lr"]) for p in points],
                            [p["wer_test_clean"] for p in points],
                            yerr=[p.get("wer_test_clean_std") or 0 for p in points], capsize=3,
                            marker="o", label=f"S3-Router {init.upper()}")
        ax.set_xscale("log")
        ax.set_title(f"{split}: S3-Router, test-clean WER")
        ax.set_xlabel("learning rate of the mask scores")
        ax.set_ylabel("WER % (greedy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


def parse_args(argv=None):
    """The command line (see the module's docstring); ``sys.argv[1:]`` when None."""
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
    parser.add_argument("--seeds", nargs="+", default=None, metavar="SEED",
                        help="every run once per seed; mean +- std and paired bootstrap "
                             "intervals against weight fine-tuning (sweep_seeds.md)")
    parser.add_argument("--score-lrs", nargs="+", default=None, metavar="LR",
                        help=f"also S3-Router at --score-lr-sparsity for every init and each "
                             f"learning rate of the mask scores ({SCORE_LR_KEY}; score_lr.md)")
    parser.add_argument("--score-lr-sparsity", default="0.1")
    parser.add_argument("--prune-intervals", nargs="+", default=None, metavar="STEPS",
                        help=f"PARP and structured PARP once per prune interval ({INTERVAL_KEY})")
    parser.add_argument("--set", action="append", default=[], metavar="SPLIT:KEY=VALUE",
                        help="an hparams override for one split's runs")
    parser.add_argument("--jobs", type=int, default=2)
    add_executor_options(parser, sep="-")
    parser.add_argument("--report-only", action="store_true",
                        help="tables and plots only (give the grid's options, --seeds too)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = jobs_for(args)
    if not args.report_only:
        launcher = launcher_for(args, cpus_per_task=1)
        # The pruning runs start from the weight fine-tuning run: it goes first, they go last
        # and wait for it. Each run is a child process (or a submitit job): threads suffice.
        pruning = [j for j in jobs if j.yaml.removesuffix(".yaml") in PRUNING + STRUCTURED]
        plain = [j for j in jobs if j not in pruning]
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(run, job, launcher): job for job in plain}
            if pruning:
                concurrent.futures.wait([f for f, j in futures.items()
                                         if j.yaml == "weight_ft.yaml"])
                futures.update({pool.submit(run, job, launcher): job for job in pruning})
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                name, results, seconds = future.result()
                wer = results and (results["wer_test_clean"], results["wer_test_other"])
                print(f"[{done}/{len(futures)}] {name}: WER clean/other {wer} "
                      f"({seconds / 60:.1f} min)", flush=True)
    write_report(args.out)
    if args.seeds or args.score_lrs:
        rows = pooled(jobs, args.out, args.seeds or [None])
        if args.seeds:
            write_seeds_report(rows, args.out, args.seeds)
        if args.score_lrs:
            write_score_lr_report(rows, args.out, args.score_lr_sparsity, args.seeds or [None])


if __name__ == "__main__":
    main()
