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
sys.path.insert(0, str(REPO / "studies" / "budget_pruning"))
sys.path.insert(0, str(REPO / "studies" / "per_task_storage"))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "benchmarks"))

import budget_pruning
import deployment_ladder
import int8_threads
import per_task_storage
import family_matrix
from s3brain.compare.pareto import budget_report
from s3brain.compare.study import RecipeStudy

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


#: The recipes' comparison studies (``studies/*_comparison``, or one per task below it), by
#: recipe path under ``recipes/`` (``LibriSpeech``, ``SUPERB/KS``): each recipe README's Results
#: table, intervals, findings and Pareto plot; a recipe without one has no table.
STUDIES = {str(Path(study.spec()["recipe"]).relative_to("recipes")): study
           for study in (RecipeStudy(p.parent) for pattern in ("studies/*_comparison/study.json",
                                                               "studies/*_comparison/*/study.json")
                         for p in sorted(REPO.glob(pattern)) if (p.parent / "records").is_dir())}
comparison = STUDIES["LibriSpeech"]


@functools.cache
def study_rows(recipe):
    """A recipe's comparison pooled over its seeds (its tables and plots in ``SCRATCH``)."""
    return tuple(STUDIES[recipe].rows(scratch(STUDIES[recipe])))


def scratch(study):
    """Where a study's tables and plots are made (``SCRATCH/<its path under studies/>``)."""
    return SCRATCH / study.folder.relative_to(REPO / "studies")


def comparison_rows():
    """The LibriSpeech comparison pooled over its seeds."""
    return study_rows("LibriSpeech")


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
            f"{record['date']}, {record['minutes']:.0f} min with "
            f"`{record['command']}`"
            + (f"; {record['note']}" if record.get("note") else "")
            + " (record: `tools/records/family_matrix.json`)\n\n")
    return head + family_matrix.summary_markdown(record)




def _first_command():
    """The default command's own run (the S3-Router row's seed that the yaml sets)."""
    seed = 1986
    r = json.loads((comparison.records / f"seed{seed}" / "s3router" / "results.json"
                    ).read_text())
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
            f"`tools/records/first_command.json`, made by `./s3env python tools/first_command.py`); "
            f"that run printed test-clean WER "
            f"{t['wer_test_clean']:.2f} greedy and {t['wer_test_clean_lm']:.2f} with the LM.")


#: Generated part -> the function that makes its text.
def _study_parts(recipe):
    """A recipe's comparison parts: ``<recipe>-results`` (with the command that makes it),
    ``<recipe>-intervals`` and ``<recipe>-findings``."""
    study, name = STUDIES[recipe], recipe.lower().replace("/", "-")
    return {f"{name}-results": lambda: study.results_table(study_rows(recipe)) + "\n\n"
            + study.command_line(),
            f"{name}-intervals": lambda: study.intervals_table(study_rows(recipe)),
            f"{name}-findings": lambda: study.findings(study_rows(recipe),
                                                       study.spec().get("unit", "points"))}


PARTS = {
    **{k: v for recipe in STUDIES for k, v in _study_parts(recipe).items()},
    "budget-pruning-table": lambda: budget_pruning.table(budget_rows()) + "\n\n"
    + budget_pruning.command_line(),
    "budget-pruning-findings": lambda: budget_pruning.findings(budget_rows()),
    "deployment-ladder": _ladder,
    "per-task-storage": lambda: per_task_storage.comparison_table(
        {recipe: (study, study_rows(recipe)) for recipe, study in STUDIES.items()}),
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
    """The ``performance`` text of one recipe row: its recipe's comparison figures (the
    results table's error rates, mean of the seeds) where the study holds the row's yaml, else
    ``NOT_MEASURED``."""
    hparams = Path(row["Hparam_file"])
    recipe = str(hparams.parent.parent.relative_to("recipes")) \
        if hparams.parts[0] == "recipes" and hparams.parent.name == "hparams" else None
    if recipe not in STUDIES or row["Dataset"] != recipe.split("/")[0] \
            or "test_debug_flags" not in row:
        return NOT_MEASURED
    pooled = {r["name"]: r for r in study_rows(recipe)}
    if hparams.stem not in pooled:
        return NOT_MEASURED
    name = hparams.stem
    r, study = pooled[name], STUDIES[recipe].spec()
    figures = ", ".join(f"{label} {r[key]:.2f}" for key, label in study["columns"].items()
                        if r.get(key) is not None)
    return (f"{figures} (mean of {len(study['seeds'])} seeds; {study['corpus']}"
            + (f" {' '.join(study['overrides'])}" if study["overrides"] else "") + ")")


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
    for recipe, study in STUDIES.items():
        study_rows(recipe)
        for name in STUDY_TABLES:
            texts[study.folder / name] = (scratch(study) / name).read_text()
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
        for study in STUDIES.values():
            for plot in scratch(study).glob("*.png"):
                shutil.copyfile(plot, study.folder / plot.name)
        budget_rows()
        shutil.copyfile(SCRATCH / "tradeoff.png", budget_pruning.STUDY / "tradeoff.png")
    verb = "differ from their records" if args.check else "rewritten"
    print(f"{len(differ)} files {verb}" + (f": {[str(p.relative_to(REPO)) for p in differ]}"
                                           if differ else ""))
    return 1 if args.check and differ else 0


if __name__ == "__main__":
    sys.exit(main())
