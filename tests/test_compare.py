"""The comparison harness over real tiny runs: table rows, reuse, failures, plots."""

import csv
import shutil

from conftest import RECIPE

from s3brain import compare

TINY = ["--synthetic_size=tiny", "--number_of_epochs=1", "--cost_repeats=1", "--lm_decoding=False"]


def test_two_strategies_then_reuse_and_a_failure(tiny_corpus, tmp_path):
    out = tmp_path / "cmp"
    # omp starts from weight fine-tuning: asking for omp alone runs weight_ft first.
    rows = compare.compare(RECIPE, ["omp.yaml"], out, TINY, threads=1)
    assert [r["name"] for r in rows] == ["weight_ft", "omp"]
    assert all(r["status"] == "ok" for r in rows), rows
    assert rows[1]["sparsity"] == 0.5 and rows[0]["sparsity"] == 0.0
    with open(out / "comparison.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["name"] for t in table] == ["weight_ft", "omp"]
    assert float(table[0]["flops_10s"]) > 0
    md = (out / "comparison.md").read_text().splitlines()
    assert len(md) == 4 and md[2].startswith("| weight_ft | ok |")
    for png in ("wer_vs_flops.png", "wer_vs_sparsity.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    # A recipe folder with one broken yaml: finished runs are reused, the broken one is a row.
    recipe = tmp_path / "recipe"
    (recipe / "hparams").mkdir(parents=True)
    (recipe / "train.py").symlink_to(RECIPE / "train.py")
    for name in ("weight_ft.yaml", "omp.yaml"):
        shutil.copy(RECIPE / "hparams" / name, recipe / "hparams" / name)
    broken = (RECIPE / "hparams" / "weight_ft.yaml").read_text().replace(
        "ssl: !apply:s3brain.backbone.load_ssl", "ssl: !apply:s3brain.backbone.no_such_function")
    (recipe / "hparams" / "broken.yaml").write_text(broken)
    code = compare.main([str(recipe), "--all", "--out", str(out), "--jobs", "2", "--", *TINY])
    assert code == 1
    with open(out / "comparison.csv") as f:
        table = {t["name"]: t for t in csv.DictReader(f)}
    assert table["broken"]["status"].startswith("failed (exit")
    assert table["weight_ft"]["status"] == table["omp"]["status"] == "ok (reused)"
