"""The documents' tables and plots are made from the committed records (tools/docs.py): no
figure of a README can drift from its data."""

import csv
import json
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import docs  # noqa: E402


def test_every_document_equals_what_its_records_make():
    differ = [str(p.relative_to(REPO)) for p, text in docs.expected().items()
              if not p.exists() or p.read_text(encoding="utf-8") != text]
    assert not differ, f"run ./s3env python tools/docs.py: {differ}"
    for name in docs.STUDY_PLOTS[:1]:
        assert (docs.comparison.folder / name).read_bytes()[:4] == b"\x89PNG"


def test_a_changed_figure_in_a_readme_is_caught():
    text = (REPO / "recipes" / "LibriSpeech" / "README.md").read_text(encoding="utf-8")
    block = docs.BLOCK.search(text)
    assert block and block.group("name") == "librispeech-results"
    body = block.group("body")
    figure = re.search(r"\d+\.\d\d", body)
    changed_figure = f"{float(figure.group()) + 0.01:.2f}"
    changed = text.replace(body, body.replace(figure.group(), changed_figure, 1), 1)
    assert changed != text
    assert docs.render(changed) == text  # the records give back the true figure


def test_a_changed_record_changes_the_table(tmp_path):
    records = tmp_path / "records"
    shutil.copytree(docs.comparison.folder / "records", records)
    path = records / "seed1987" / "s3router" / "results.json"
    results = json.loads(path.read_text())
    results["wer_test_clean"] += 3.0
    path.write_text(json.dumps(results))
    rows = {r["name"]: r for r in docs.comparison_rows()}
    again = {r["name"]: r for r in docs.comparison.rows(tmp_path / "out", records)}
    assert abs(again["s3router"]["wer_test_clean"] - rows["s3router"]["wer_test_clean"] - 1.0) \
        < 1e-9  # the mean of three seeds moves by a third
    assert again["weight_ft"]["wer_test_clean"] == rows["weight_ft"]["wer_test_clean"]


def test_performance_md_is_the_recipe_index_performance_column():
    text = (REPO / "PERFORMANCE.md").read_text(encoding="utf-8")
    for path in sorted((REPO / "tests" / "recipes").glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                line = f"| {row['Task']} | `{row['Hparam_file']}` | {row['performance']} |"
                assert line in text, line
    # every recipe with a study: each of its rows has the study's mean figures
    for recipe in docs.STUDIES:
        for r in docs.study_rows(recipe):
            key, label = next(iter(docs.STUDIES[recipe].spec()["columns"].items()))
            assert f"`recipes/{recipe}/hparams/{r['name']}.yaml` | {label} {r[key]:.2f}" in text


def test_no_document_cites_a_commit():
    """A README says what the current code gives, not which commit gave a figure: no word of a
    document names a commit of this repository."""
    import subprocess

    if not (REPO / ".git").exists():
        return
    words = {w for p in docs.documents() for w in re.findall(r"\b[0-9a-f]{7,40}\b",
                                                             p.read_text(encoding="utf-8"))
             if re.search(r"[a-f]", w) and re.search(r"\d", w)}
    commits = [w for w in sorted(words) if subprocess.run(
        ["git", "cat-file", "-e", f"{w}^{{commit}}"], cwd=REPO, capture_output=True,
        check=False).returncode == 0]
    assert not commits, f"documents cite commits {commits}"


def test_the_first_commands_figures_are_within_the_tables_spread():
    """The README's first command (S3-Router on the defaults, timed from a fresh clone) printed
    figures within two standard deviations of the S3-Router row its three seeds make."""
    record = json.loads((REPO / "tools" / "records" / "first_command.json").read_text())
    assert record["command"].endswith("hparams/s3router.yaml")
    row = {r["name"]: r for r in docs.comparison_rows()}["s3router"]
    for key, recorded in (("wer_test_clean", "wer_test_clean"),
                          ("wer_test_clean_lm", "wer_test_clean_lm")):
        assert abs(record[recorded] - row[key]) <= 2 * row[f"{key}_std"], key
    assert record["seconds"] < 15 * 60, "the first command takes 15 minutes or more"
