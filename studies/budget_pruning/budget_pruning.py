#!/usr/bin/env python3
"""Pruning to a FLOPs budget of the whole backbone (``hparams/budget_pruning.yaml``) at several
targets, three seeds each, against its fair dense reference (``weight_ft_continued.yaml``: the
same 20 extra epochs from the same fine-tuned model, nothing pruned): the WER each target costs,
greedy, with the LM and in int8, beside the speed-up of the same shape at wav2vec2-base size
(``benchmarks/deployment_ladder.py``'s record).

    ./s3env python studies/budget_pruning/budget_pruning.py          # from records (seconds)
    ./s3env python studies/budget_pruning/budget_pruning.py --run    # trains what is missing

Without ``--run`` nothing trains: the table (``budget_pruning.md``) and the trade-off plot
(``tradeoff.png``) are made from ``records/target<r>/seed<s>/<yaml>/``. With ``--run`` each
target runs through ``python -m s3brain.compare`` in ``--out/target<r>``: the weight fine-tuning
run and its continuation are trained once, for the first target, and linked into the others'
folders; finished runs are reused, so an interrupted study continues.
"""

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from s3brain.compare.cli import compare_seeds
from s3brain.compare.records import record_comparison, size_of
from s3brain.compare.stats import seed_interval
from s3brain.compare.tables import interval_text, mean_std_text

matplotlib.use("Agg")

STUDY = Path(__file__).resolve().parent
REPO = STUDY.parents[1]
SPEC = STUDY / "study.json"
LADDER = REPO / "benchmarks" / "records" / "deployment_ladder.json"
#: The runs every target shares: the fine-tuned model it starts from and the fair reference.
SHARED = ("weight_ft", "weight_ft_continued")
REFERENCE = "weight_ft_continued"


def spec():
    """The study's definition: recipe, yaml, targets, seeds, corpus, when recorded."""
    return json.loads(SPEC.read_text())


def target_name(target):
    """The folder of a target: ``target0.5``."""
    return f"target{target:g}"


def run(out, jobs=2):
    """Train what is missing of every target in ``out/target<r>`` and record them all.

    Arguments
    ---------
    out : Path
        Where the runs go.
    jobs : int
        Runs at the same time.

    Returns
    -------
    int
        The number of records written.
    """
    study = spec()
    first = Path(out) / target_name(study["targets"][0])
    written = 0
    for target in study["targets"]:
        folder = Path(out) / target_name(target)
        if folder != first:  # the shared runs: the first target's, linked
            for seed in study["seeds"]:
                for name in SHARED:
                    link = folder / f"seed{seed}" / name
                    if not link.exists():
                        link.parent.mkdir(parents=True, exist_ok=True)
                        link.symlink_to((first / f"seed{seed}" / name).resolve(),
                                        target_is_directory=True)
        compare_seeds(REPO / study["recipe"], [study["yaml"]], folder, study["seeds"],
                      overrides=[*study["overrides"], f"--target_flops_ratio={target}"],
                      jobs=jobs)
        records = STUDY / "records" / target_name(target)
        written += len(record_comparison(folder, records))
        if folder != first:  # the shared runs' records: once, the others link to them
            for seed in study["seeds"]:
                for name in SHARED:
                    record = records / f"seed{seed}" / name
                    shutil.rmtree(record)
                    record.symlink_to(os.path.relpath(
                        STUDY / "records" / target_name(study["targets"][0]) / f"seed{seed}"
                        / name, record.parent), target_is_directory=True)
    SPEC.write_text(json.dumps({**study, "recorded": datetime.date.today().isoformat()},
                               indent=1) + "\n")
    return written


def _per_seed(target, name, key, records=None):
    """``{seed: value}`` of ``key`` in the records of ``name``'s runs at ``target``."""
    study = spec()
    values = {}
    for seed in study["seeds"]:
        path = (Path(records or STUDY / "records") / target_name(target) / f"seed{seed}" / name
                / "results.json")
        value = json.loads(path.read_text()).get(key) if path.exists() else None
        if value is not None:
            values[seed] = value
    return values


def seed_difference(target, key, reference_key, name=None, records=None):
    """Mean and t interval over the seeds of ``key`` of ``name``'s runs (default: the pruned
    ones) minus ``reference_key`` of the fair reference's runs (e.g. int8 WER against the
    reference's fp32 WER), or None with fewer than two seeds."""
    pruned = _per_seed(target, name or spec()["strategy"], key, records)
    reference = _per_seed(target, REFERENCE, reference_key, records)
    seeds = [s for s in pruned if s in reference]
    if len(seeds) < 2:
        return None
    return seed_interval([pruned[s] - reference[s] for s in seeds])


def ladder():
    """``{rung: {threads: speed-up}}`` from the deployment ladder's record (wav2vec2-base size),
    or ``{}`` without one."""
    if not LADDER.exists():
        return {}
    record = json.loads(LADDER.read_text())
    rungs = record["rungs"]
    dense = rungs["dense"]["ms"]
    return {name: {t: dense[t]["median"] / ms["median"] for t, ms in rung["ms"].items()}
            for name, rung in rungs.items()}


def rows(records=None):
    """One row per target and the reference's: pooled over the seeds from the records
    (``records/`` by default), with
    the paired intervals against the fair reference (``d_``: bootstrap over the utterances,
    ``s_``: t over the seeds) and the int8 WER's seed interval against the reference's fp32."""
    study = spec()
    table = []
    for target in study["targets"]:
        folder = Path(records or STUDY / "records") / target_name(target)
        with tempfile.TemporaryDirectory() as scratch:  # compare_seeds's own tables: not kept
            pooled, _ = compare_seeds(REPO / study["recipe"], [study["yaml"]], scratch,
                                      study["seeds"], overrides=study["overrides"],
                                      records=folder)
        by_name = {r["name"]: r for r in pooled}
        if not table:
            table.append({**by_name[REFERENCE], "target": 1.0,
                          "records": str(records) if records else None})
        row = {**by_name[study["strategy"]], "target": target}
        row["s_wer_test_clean_int8"] = seed_difference(target, "wer_test_clean_int8",
                                                       "wer_test_clean", records=records)
        row["records"] = str(records) if records else None
        table.append(row)
    return table


def ladder_accuracy(pooled):
    """``{ladder rung: cell}``: the test-clean WER (mean ± std over the seeds) of the rungs whose
    model the recipe trained and tested (dense: the fair reference; each budget target; their
    recipe int8 deployments), with the t interval over the seeds of the difference from the
    dense reference's fp32 WER; for ``benchmarks/deployment_ladder.py``'s ``ladder_table``."""
    first = spec()["targets"][0]
    cells = {}
    for r in pooled:
        reference = r["name"] == REFERENCE
        rung = "dense" if reference else f"budget {r['target']:g}"
        target = first if reference else r["target"]
        for suffix, key in (("", "wer_test_clean"), (" int8", "wer_test_clean_int8")):
            if r.get(key) is None:
                continue
            text = mean_std_text(r, key)
            if reference and suffix:  # the reference's int8 against its own fp32
                difference = seed_difference(target, key, "wer_test_clean", r["name"],
                                             r.get("records"))
            else:  # the row's own seed interval (the fp32 one from the error records)
                difference = None if reference else r.get(f"s_{key}")
            text += f" ({interval_text(difference)})" if difference else ""
            cells[rung + suffix] = text
    return cells


def _speedups(name, speedups):
    rung = speedups.get(name)
    if not rung:
        return "not in the ladder's record"
    return " / ".join(f"{rung[t]:.2f}x" for t in sorted(rung, key=int))


def table(pooled):
    """The study's table: per target, the deployed backbone's FLOPs share, WER (greedy, LM,
    int8) with the difference against the fair reference, and the same shape's speed-up at
    wav2vec2-base size."""
    speedups = ladder()
    threads = sorted(next(iter(speedups.values()), {}), key=int)
    per = "/".join(f"{t}" for t in threads) or "1/2"
    lines = [
        "| hparams | target | backbone FLOPs share | test-clean WER greedy | against the "
        "reference (utterances; seeds) | with LM | against (utterances; seeds) | int8 | int8 "
        f"against the reference's fp32 (seeds) | speed-up at base size, fp32 ({per} threads) "
        f"| int8 ({per} threads) |",
        "|" + " --- |" * 11]
    for r in pooled:
        reference = r["name"] == REFERENCE
        ratio = 1.0 if reference else r.get("backbone_flops_ratio")
        rung = "dense" if reference else f"budget {r['target']:g}"
        int8_rung = "dense int8" if reference else f"budget {r['target']:g} int8"
        cells = [
            f"`{r['name']}.yaml`", "" if reference else f"{r['target']:g}",
            "" if ratio is None else f"{ratio:.3f}",
            mean_std_text(r, "wer_test_clean"),
            "" if reference else (f"{interval_text(r['d_wer_test_clean'])}; "
                                  f"{interval_text(r['s_wer_test_clean'])}"),
            mean_std_text(r, "wer_test_clean_lm"),
            "" if reference else (f"{interval_text(r['d_wer_lm_test_clean'])}; "
                                  f"{interval_text(r['s_wer_lm_test_clean'])}"),
            mean_std_text(r, "wer_test_clean_int8"),
            "" if reference or not r.get("s_wer_test_clean_int8")
            else interval_text(r["s_wer_test_clean_int8"]),
            _speedups(rung, speedups), _speedups(int8_rung, speedups)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def command_line():
    """Where the table comes from: seeds, corpus, date, the commands."""
    study = spec()
    return (f"{len(study['seeds'])} seeds ({', '.join(map(str, study['seeds']))}), corpus "
            f"`{study['corpus']}`, recorded {study.get('recorded') or '?'}; made from "
            "`studies/budget_pruning/records` and `benchmarks/records/deployment_ladder.json` "
            "by `./s3env python tools/docs.py`, rerun by `./s3env python "
            "studies/budget_pruning/budget_pruning.py --run`")


def findings(pooled):
    """One line per target: what its intervals support against the fair reference."""
    lines = []
    for r in pooled:
        if r["name"] == REFERENCE:
            continue
        parts = []
        for key, label in (("wer_test_clean", "greedy"), ("wer_lm_test_clean", "with the LM"),
                           ("wer_test_clean_int8", "int8 (against fp32)")):
            s = r.get(f"s_{key}")
            if not s:
                continue
            verdict = ("larger than the seeds' noise" if s["excludes_zero"]
                       else "within the seeds' noise")
            parts.append(f"{label} {interval_text(s).rstrip(' *')} ({verdict})")
        lines.append(f"- target {r['target']:g} (backbone FLOPs share "
                     f"{r.get('backbone_flops_ratio', float('nan')):.3f}): " + ", ".join(parts)
                     + ".")
    speedups = ladder()
    within = [r for r in pooled if r["name"] != REFERENCE and r.get("s_wer_test_clean_int8")
              and r["s_wer_test_clean_int8"]["difference"] <= 1.0
              and r["s_wer_test_clean"]["difference"] <= 1.0]
    if within:
        best = min(within, key=lambda r: r["target"])
        rung = speedups.get(f"budget {best['target']:g} int8", {})
        lines.append(
            f"- The smallest target whose mean WER over the seeds stays within one point of the "
            f"reference, in fp32 and in int8, is {best['target']:g}"
            + (f"; its int8 deployment is {' and '.join(f'{v:.2f}x' for _, v in sorted(rung.items(), key=lambda kv: int(kv[0])))} "
               f"faster than dense fp32 at wav2vec2-base size ({'/'.join(sorted(rung, key=int))} "
               "threads)" if rung else "") + ".")
    return "\n".join(lines)


def plot(pooled, path):
    """WER cost against the fair reference (t interval over the seeds) against the speed-up at
    wav2vec2-base size (one thread), fp32 and int8, one point per target; the one-point line
    dashed."""
    speedups = ladder()
    fig, ax = plt.subplots(figsize=(6, 4))
    for suffix, key, marker, label in (("", "s_wer_test_clean", "o", "fp32"),
                                       (" int8", "s_wer_test_clean_int8", "s", "int8")):
        xs, ys, lows, highs, names = [], [], [], [], []
        for r in pooled:
            reference = r["name"] == REFERENCE
            rung = ("dense" if reference else f"budget {r['target']:g}") + suffix
            if rung not in speedups:
                continue
            if reference:
                base = r.get("wer_test_clean")
                y = (r.get("wer_test_clean_int8") - base) if suffix else 0.0
                interval = None
            else:
                interval = r.get(key)
                if not interval:
                    continue
                y = interval["difference"]
            xs.append(speedups[rung]["1"])
            ys.append(y)
            lows.append(y - interval["low"] if interval else 0.0)
            highs.append(interval["high"] - y if interval else 0.0)
            names.append("dense" if reference else f"{r['target']:g}")
        if xs:
            ax.errorbar(xs, ys, yerr=[lows, highs], marker=marker, capsize=3, label=label)
            for x, y, n in zip(xs, ys, names):
                ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(1.0, linestyle="--", color="grey", linewidth=1, label="+1 WER point")
    ax.axvline(3.0, linestyle=":", color="grey", linewidth=1, label="3x")
    ax.set_xlabel("whole-model speed-up at wav2vec2-base size, 1 thread")
    ax.set_ylabel("test-clean WER minus the dense reference's")
    ax.set_title("Budget pruning: targets (labels), 3 seeds, 95 % t intervals")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="store_true", help="train the runs (hours), then record")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "budget_pruning",
                        help="where --run trains")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--plot", type=Path, default=STUDY / "tradeoff.png")
    args = parser.parse_args(argv)
    if args.run:
        written = run(args.out, args.jobs)
        print(f"{written} records, {size_of(STUDY / 'records') / 1e3:.0f} kB")
    pooled = rows()
    print(table(pooled))
    print(findings(pooled))
    plot(pooled, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
