#!/usr/bin/env python3
"""Every table and plot of the documents, made again from the committed records, without
training: the parts of the READMEs between ``<!-- begin generated: NAME -->`` and
``<!-- end generated: NAME -->``, the ``performance`` column of ``tests/recipes/*.csv``,
``PERFORMANCE.md`` (from that column, as SpeechBrain's ``tools/readme_builder.py`` makes it) and
the studies' plots.

    ./s3env python tools/docs.py            # rewrite them (seconds)
    ./s3env python tools/docs.py --check    # exit 1, naming each file, if one differs

``tests/unit/test_docs.py`` runs the check, so that no figure of a document can drift from its
records. Which records each part comes from is in ``PARTS``.
"""

import argparse
import atexit
import csv
import difflib
import functools
import io
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "studies" / "librispeech_comparison"))
sys.path.insert(0, str(REPO / "studies" / "budget_pruning"))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "benchmarks"))

import budget_pruning
import deployment_ladder
import int8_threads
import family_matrix
import librispeech_comparison as comparison

from s3brain.compare.pareto import budget_report

BLOCK = re.compile(r"(<!-- begin generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
                   r"(<!-- end generated: (?P=name) -->)", re.DOTALL)
#: The documents that may hold generated parts (besides the studies' READMEs).
DOCUMENTS = ("README.md", "CONTRIBUTING.md", "recipes/*/README.md", "recipes/*/*/README.md",
             "studies/*/README.md", "tools/README.md", "benchmarks/README.md",
             "tests/recipes/README.md")
INDEX = REPO / "tests" / "recipes"
PERFORMANCE = REPO / "PERFORMANCE.md"
#: The budget of the README's example query.
BUDGET = {"latency_ms_10s": 300, "storage_bytes_per_task": 1e6}
NOT_MEASURED = "not measured on the current code (debug check only)"


#: Where the studies' tables and plots are made before they are compared or copied.
SCRATCH = Path(tempfile.mkdtemp(prefix="s3brain_docs_"))
atexit.register(shutil.rmtree, SCRATCH, True)
#: The study files made from records: tables compared by ``--check``, plots only copied.
STUDY_TABLES = ("comparison.md", "comparison.csv")
STUDY_PLOTS = ("pareto.png", "wer_vs_flops.png", "wer_vs_sparsity.png")


@functools.cache
def comparison_rows():
    """The LibriSpeech comparison pooled over its seeds (its tables and plots in ``SCRATCH``)."""
    return tuple(comparison.rows(SCRATCH / "librispeech_comparison"))


@functools.cache
def budget_rows():
    """The budget pruning study's targets pooled over their seeds (its plot in ``SCRATCH``)."""
    rows = tuple(budget_pruning.rows())
    budget_pruning.plot(rows, SCRATCH / "tradeoff.png")
    return rows


def _ladder():
    """The deployment ladder's record as a table, with the accuracy of the rungs the budget
    pruning study trained."""
    record = json.loads(budget_pruning.LADDER.read_text())
    machine = record["machine"]
    head = (f"{record['model']}, whole model (waveform in, last hidden state out), "
            f"{record['seconds']:g} s of audio, batch 1, median of {record['repeats']} "
            f"interleaved rounds; {record['date'][:10]}, {machine.get('cpu_model') or ''} "
            f"({machine['cpu_count']} cores); `{record['command']}` (record: "
            "`benchmarks/records/deployment_ladder.json`)\n\n")
    return head + deployment_ladder.ladder_table(
        record, budget_pruning.ladder_accuracy(budget_rows()),
        "test-clean WER, tiny backbone, 3 seeds (minus dense fp32, t interval over seeds)")


def _int8_threads():
    """The int8 thread profile's summary, from its record."""
    path = REPO / "benchmarks" / "records" / "int8_threads.json"
    record = json.loads(path.read_text())
    return (f"Measured on {record['machine'].get('cpu_count')} cores with "
            f"`{record['command']}`:\n\n"
            + "\n".join(f"- {line}" for line in int8_threads.scaling_summary(record)))


def _family_matrix():
    record = json.loads(family_matrix.RECORD.read_text())
    runs = [r for r in record["runs"] if not r["row"].startswith("(")]
    models = len({r["model"] for r in runs})
    head = (f"{len(runs)} runs ({len(runs) // max(models, 1)} rows x {models} models), "
            f"{record['date']}, code {record['code']}, {record['minutes']:.0f} min with "
            f"`{record['command']}`"
            + (f"; {record['note']}" if record.get("note") else "")
            + " (record: `tools/records/family_matrix.json`)\n\n")
    return head + family_matrix.summary_markdown(record)


def _comparison_command():
    study = comparison.spec()
    return (f"{len(study['seeds'])} seeds ({', '.join(map(str, study['seeds']))}), corpus "
            f"`{study['corpus']}`, recorded {study.get('recorded', '?')}; made from "
            "`studies/librispeech_comparison/records` by `./s3env python tools/docs.py`, "
            "rerun by `./s3env python studies/librispeech_comparison/librispeech_comparison.py "
            "--run`")


def _first_command():
    """The default command's own run (the S3-Router row's seed that the yaml sets)."""
    seed = 1986
    r = json.loads((comparison.STUDY / "records" / f"seed{seed}" / "s3router" /
                    "results.json").read_text())
    return (f"Its run in the study below (seed {seed}, the yaml's) printed test-clean / "
            f"test-other WER {r['wer_test_clean']:.2f} / {r['wer_test_other']:.2f} greedy and "
            f"{r['wer_test_clean_lm']:.2f} / {r['wer_test_other_lm']:.2f} with the LM "
            f"({r['wer_test_clean_int8']:.2f} / {r['wer_test_other_int8']:.2f} int8), "
            f"{r['flops_10s'] / 1e9:.2f} GFLOPs and {r['latency_ms_10s']:.0f} ms for 10 s of "
            f"audio on one thread, {r['storage_bytes_per_task']:,} bytes per task, after "
            f"{r['train_seconds'] / 60:.1f} min of training (one thread, another run beside it)."
            + _first_command_time())


def _first_command_time():
    """How long the first command took from a fresh clone (``tools/records/first_command.json``)."""
    t = json.loads((REPO / "tools" / "records" / "first_command.json").read_text())
    return (f" From a fresh clone on the {t['cores']}-core development machine, with the "
            f"corpus not yet generated, the whole command took {t['seconds'] // 60} min "
            f"{t['seconds'] % 60} s ({t['date']}; setting up the environment, "
            f"{t['corpus_seconds'] / 60:.1f} min generating the corpus, "
            f"{t['train_seconds'] / 60:.1f} min training with {t['threads']} threads, then "
            f"testing greedy, with the LM and in int8; {t['note']}; record "
            "`tools/records/first_command.json`).")


#: Generated part -> the function that makes its text.
PARTS = {
    "librispeech-results": lambda: comparison.results_table(comparison_rows()) + "\n\n"
    + _comparison_command(),
    "librispeech-intervals": lambda: comparison.intervals_table(comparison_rows()),
    "librispeech-findings": lambda: comparison.findings(comparison_rows()),
    "budget-pruning-table": lambda: budget_pruning.table(budget_rows()) + "\n\n"
    + budget_pruning.command_line(),
    "budget-pruning-findings": lambda: budget_pruning.findings(budget_rows()),
    "deployment-ladder": _ladder,
    "family-matrix": _family_matrix,
    "int8-threads": _int8_threads,
    "first-command": _first_command,
    "librispeech-budget": lambda: "```\n$ ./s3env python -m s3brain.compare.pareto "
    "studies/librispeech_comparison/comparison.csv \\\n    --max " + " ".join(
        f"{k}={v:.0f}" for k, v in BUDGET.items()) + "\n" + budget_report(
        list(comparison_rows()), BUDGET, "wer_test_clean")[0] + "\n```",
}


def documents():
    """Every document that may hold a generated part."""
    found = [p for pattern in DOCUMENTS for p in sorted(REPO.glob(pattern))]
    return list(dict.fromkeys(found))


def render(text, where="document"):
    """``text`` with each generated part made again from its records."""
    def fill(match):
        name = match.group("name")
        if name not in PARTS:
            raise KeyError(f"{where}: unknown generated part {name!r} (known: {sorted(PARTS)})")
        return f"{match.group(1)}{PARTS[name]().rstrip()}\n{match.group(4)}"
    return BLOCK.sub(fill, text)


def performance_of(row):
    """The ``performance`` text of one recipe row: the comparison's figures where it holds the
    row's yaml, else ``NOT_MEASURED``."""
    if row["Dataset"] != "LibriSpeech" or "test_debug_flags" not in row:
        return NOT_MEASURED
    name = Path(row["Hparam_file"]).stem
    pooled = {r["name"]: r for r in comparison_rows()}
    if Path(row["Hparam_file"]).parent.name != "hparams" or name not in pooled:
        return NOT_MEASURED
    r, study = pooled[name], comparison.spec()
    return (f"test-clean WER {r['wer_test_clean']:.2f} greedy {r['wer_test_clean_lm']:.2f} LM; "
            f"test-other {r['wer_test_other']:.2f} / {r['wer_test_other_lm']:.2f} (mean of "
            f"{len(study['seeds'])} seeds; {study['corpus']} train-10m)")


def index_texts():
    """``{csv path: text}`` of ``tests/recipes/*.csv`` with their ``performance`` column made
    again."""
    texts = {}
    for path in sorted(INDEX.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        out = io.StringIO()
        writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "performance": performance_of(row)})
        texts[path] = out.getvalue()
    return texts


def performance_text(indexes):
    """``PERFORMANCE.md``: every recipe row's performance, per dataset (from the CSVs)."""
    lines = ["# Performance of the recipes", "",
             ("Made by `./s3env python tools/docs.py` from the `performance` column of "
             "`tests/recipes/*.csv`, which it makes from the studies' records (SpeechBrain's "
             "`PERFORMANCE.md` is made the same way from its recipe index). A row that no study "
             "has measured on the current code says so."), ""]
    for path, text in indexes.items():
        rows = list(csv.DictReader(io.StringIO(text)))
        lines += [f"## {path.stem}", "", "| task | hparams file | performance |",
                  "| --- | --- | --- |"]
        lines += [f"| {r['Task']} | `{r['Hparam_file']}` | {r['performance']} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def expected():
    """``{path: text}`` of every generated file as the records make it."""
    texts = {p: render(p.read_text(encoding="utf-8"), p.relative_to(REPO))
             for p in documents() if BLOCK.search(p.read_text(encoding="utf-8"))}
    indexes = index_texts()
    texts.update(indexes)
    texts[PERFORMANCE] = performance_text(indexes)
    comparison_rows()
    for name in STUDY_TABLES:
        texts[comparison.STUDY / name] = (SCRATCH / "librispeech_comparison" / name).read_text()
    return texts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming each file that differs")
    args = parser.parse_args(argv)
    differ = []
    for path, text in expected().items():
        now = path.read_text(encoding="utf-8") if path.exists() else ""
        if now == text:
            continue
        differ.append(path)
        if args.check:
            diff = difflib.unified_diff(now.splitlines(), text.splitlines(),
                                        str(path.relative_to(REPO)), "from the records",
                                        lineterm="", n=0)
            print("\n".join(list(diff)[:12]))
        else:
            path.write_text(text, encoding="utf-8")
    if not args.check:
        for name in STUDY_PLOTS:
            shutil.copyfile(SCRATCH / "librispeech_comparison" / name, comparison.STUDY / name)
        budget_rows()
        shutil.copyfile(SCRATCH / "tradeoff.png", budget_pruning.STUDY / "tradeoff.png")
    verb = "differ from their records" if args.check else "rewritten"
    print(f"{len(differ)} files {verb}" + (f": {[str(p.relative_to(REPO)) for p in differ]}"
                                           if differ else ""))
    return 1 if args.check and differ else 0


if __name__ == "__main__":
    sys.exit(main())
