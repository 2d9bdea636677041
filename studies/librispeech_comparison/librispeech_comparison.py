#!/usr/bin/env python3
"""The LibriSpeech recipe's strategies side by side, three seeds, on the recipe's defaults (the
real-sentence corpus, ``train-10m``, the default backbone): error greedy and with the LM, FLOPs,
CPU latency in fp32 and int8, bytes per task, and each strategy's paired intervals against its
reference. The recipe README's Results table, its Pareto plot and the budget query are made from
this study's records.

    ./s3env python studies/librispeech_comparison/librispeech_comparison.py          # from records
    ./s3env python studies/librispeech_comparison/librispeech_comparison.py --run --jobs 2

Without ``--run`` nothing trains: the tables (``comparison.md``, ``comparison.csv``) and plots
(``pareto.png``) are made again from ``records/`` in seconds. With ``--run`` every strategy runs
once per seed through ``python -m s3brain.compare`` in ``--out`` (finished runs are reused, so an
interrupted study continues), then the records are rewritten from the runs and the tables made.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

from s3brain.compare.cli import compare_seeds
from s3brain.compare.pareto import plot_pareto
from s3brain.compare.records import record_comparison, size_of
from s3brain.compare.tables import interval_text, markdown_table, mean_std_text

STUDY = Path(__file__).resolve().parent
REPO = STUDY.parents[1]
SPEC = STUDY / "study.json"


def spec():
    """The study's definition: recipe, yamls, seeds, overrides, when its records were made."""
    return json.loads(SPEC.read_text())


def rows(out=STUDY, records=None):
    """The study's rows pooled over its seeds, from its records (``records/`` by default);
    writes ``comparison.md``/``.csv`` and the plots (``pareto.png``, ``wer_vs_flops.png``) into
    ``out``."""
    study = spec()
    pooled, _ = compare_seeds(REPO / study["recipe"], study["yamls"], out, study["seeds"],
                              overrides=study["overrides"], records=records or STUDY / "records")
    plot_pareto(pooled, Path(out) / "pareto.png", "wer_test_clean",
                title=f"LibriSpeech recipe, {study['corpus']}, {len(study['seeds'])} seeds "
                      "(bars: std over seeds; latency on one thread)")
    return pooled


def results_table(pooled):
    """The recipe README's Results table: one row per strategy."""
    lines = ["| hparams | test-clean WER greedy | with LM | test-other greedy | with LM | "
             "GFLOPs / 10 s | latency fp32 / int8 (ms, 10 s, 1 thread) | bytes per task |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in pooled:
        lines.append(
            f"| `{r['name']}.yaml` | {mean_std_text(r, 'wer_test_clean')} | "
            f"{mean_std_text(r, 'wer_test_clean_lm')} | {mean_std_text(r, 'wer_test_other')} | "
            f"{mean_std_text(r, 'wer_test_other_lm')} | {r['flops_10s'] / 1e9:.2f} | "
            f"{r['latency_ms_10s']:.0f} / {r['latency_ms_10s_int8']:.0f} | "
            f"{r['storage_bytes_per_task']:,.0f} |")
    return "\n".join(lines)


def intervals_table(pooled):
    """Each strategy against its reference: the difference in WER points on test-clean and
    test-other, greedy and with the LM; the paired bootstrap over the pooled test utterances,
    then the t interval over the seeds (* = excludes 0)."""
    keys = ["wer_test_clean", "wer_lm_test_clean", "wer_test_other", "wer_lm_test_other"]
    lines = ["| hparams | against | " + " | ".join(
        f"{k.replace('wer_lm_', 'LM ').replace('wer_', 'greedy ')} (utterances; seeds)"
        for k in keys) + " |", "|" + " --- |" * (2 + len(keys))]
    for r in pooled:
        if not r.get("reference"):
            continue
        cells = [f"{interval_text(r[f'd_{k}'])}; {interval_text(r[f's_{k}'])}"
                 if r.get(f"d_{k}") and r.get(f"s_{k}") else "" for k in keys]
        lines.append(f"| `{r['name']}` | `{r['reference']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings(pooled):
    """What the intervals support, one line per row and metric: the difference resolved over
    the seeds (training noise counted), over the test utterances only, or not at all."""
    names = {"wer_test_clean": "test-clean greedy", "wer_lm_test_clean": "test-clean with the LM",
             "wer_test_other": "test-other greedy", "wer_lm_test_other": "test-other with the LM"}
    lines = []
    for r in pooled:
        if not r.get("reference"):
            continue
        parts = {"seeds": [], "utterances": [], "neither": []}
        for key, label in names.items():
            d, s = r.get(f"d_{key}"), r.get(f"s_{key}")
            if not d:
                continue
            text = f"{label} {d['difference']:+.2f}"
            which = "seeds" if s and s["excludes_zero"] else (
                "utterances" if d["excludes_zero"] else "neither")
            parts[which].append(text)
        said = []
        if parts["seeds"]:
            said.append("larger than the seeds' noise: " + ", ".join(parts["seeds"]))
        if parts["utterances"]:
            said.append("resolved over the test utterances but not over the seeds: "
                        + ", ".join(parts["utterances"]))
        if parts["neither"]:
            said.append("not resolved: " + ", ".join(parts["neither"]))
        lines.append(f"- `{r['name']}` against `{r['reference']}` (WER points): "
                     + "; ".join(said) + ".")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="store_true", help="train the runs (hours), then record")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "librispeech_comparison",
                        help="where --run trains")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.run:
        study = spec()
        compare_seeds(REPO / study["recipe"], study["yamls"], args.out, study["seeds"],
                      overrides=study["overrides"], jobs=args.jobs)
        written = record_comparison(args.out, STUDY / "records")
        SPEC.write_text(json.dumps({**study, "recorded": datetime.date.today().isoformat()},
                                   indent=1) + "\n")
        print(f"{len(written)} records, {size_of(STUDY / 'records') / 1e3:.0f} kB")
    pooled = rows()
    print(markdown_table(pooled, ["name", "status", "wer_test_clean", "wer_test_clean_lm",
                                  "flops_10s", "latency_ms_10s", "storage_bytes_per_task"]))
    print(f"tables and plots in {STUDY.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
