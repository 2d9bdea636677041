"""The comparison harness on finished runs written by the test (reused, not rerun) and on a
stand-in recipe through submitit: pooled seeds, intervals, failures (over real tiny recipe runs:
``tests/integration/test_compare_recipes.py``)."""

import csv

from s3brain import compare


def test_seeds_give_mean_std_and_a_paired_interval_against_the_reference(tmp_path):
    """Finished runs of two strategies over three seeds (reused, not rerun): the pooled table has
    mean +- std per metric and the bootstrap interval of the WER difference, which excludes 0
    for a strategy better on every utterance of every seed."""
    import json

    from speechbrain.utils.metric_stats import ErrorRateStats

    recipe, out = tmp_path / "recipe", tmp_path / "cmp"
    (recipe / "hparams").mkdir(parents=True)
    (recipe / "train.py").write_text("raise SystemExit('finished runs are reused')\n")
    for name in ("weight_ft", "better"):
        (recipe / "hparams" / f"{name}.yaml").write_text(f"strategy: {name}\n")
    refs = {f"u{i}": "the cat sat on the mat by the door" for i in range(30)}
    wers = {}
    for seed in (1, 2, 3):
        for name, wrong in (("weight_ft", 3 + seed % 2), ("better", 1)):
            run = out / f"seed{seed}" / name
            run.mkdir(parents=True)
            hyps = {k: " ".join(["x"] * wrong + r.split()[wrong:]) for k, r in refs.items()}
            stats = ErrorRateStats()
            stats.append(list(refs), [h.split() for h in hyps.values()],
                         [r.split() for r in refs.values()])
            for split in ("test-clean", "test-other"):
                with open(run / f"wer_{split}.txt", "w") as f:
                    stats.write_stats(f)
            wer = stats.summarize("error_rate")
            wers.setdefault(name, []).append(wer)
            (run / "results.json").write_text(json.dumps(
                {"strategy": name, "wer_test_clean": wer, "wer_test_other": wer,
                 "flops_10s": 3e9}))
    code = compare.main([str(recipe), "--all", "--out", str(out), "--seeds", "1", "2", "3"])
    assert code == 0
    with open(out / "comparison.csv") as f:
        table = {row["name"]: row for row in csv.DictReader(f)}
    ref_mean = sum(wers["weight_ft"]) / 3
    assert abs(float(table["weight_ft"]["wer_test_clean"]) - ref_mean) < 1e-6
    assert float(table["weight_ft"]["wer_test_clean_std"]) > 0
    assert float(table["better"]["wer_test_clean_std"]) == 0
    assert table["weight_ft"]["d_wer_test_clean"] == ""
    interval = table["better"]["d_wer_test_clean"]
    expected = sum(wers["better"]) / 3 - ref_mean  # same words per seed: the pooled difference
    assert interval.startswith(f"{expected:+.2f} [") and interval.endswith("*")
    md = (out / "comparison.md").read_text()
    assert "±" in md and "d_wer_test_clean" in md
    assert (out / "wer_vs_flops.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_go_through_submitits_local_executor(tmp_path):
    """The harness hands each run to submitit (its local executor here, its Slurm one on a
    cluster) and collects it as it collects a local run; a failing job becomes a row saying so."""
    import json

    recipe, out = tmp_path / "recipe", tmp_path / "cmp"
    (recipe / "hparams").mkdir(parents=True)
    # A stand-in recipe: writes what a finished run writes, from its command line.
    (recipe / "train.py").write_text(
        "import json, sys, pathlib\n"
        "args = dict(a[2:].split('=', 1) for a in sys.argv[2:])\n"
        "if 'broken' in sys.argv[1]: sys.exit(3)\n"
        "out = pathlib.Path(args['output_folder'])\n"
        "wer = 50.0 + int(args['seed'])\n"
        "(out / 'results.json').write_text(json.dumps({'strategy': 'w', 'wer_test_clean': wer}))\n")
    for name in ("weight_ft", "broken"):
        (recipe / "hparams" / f"{name}.yaml").write_text(f"strategy: {name}\n")
    code = compare.main([str(recipe), "--all", "--out", str(out), "--seeds", "1", "2",
                         "--executor", "local", "--timeout_min", "5"])
    assert code == 1  # the broken strategy failed
    with open(out / "comparison.csv") as f:
        table = {row["name"]: row for row in csv.DictReader(f)}
    assert table["weight_ft"]["status"] == "2/2 seeds ok"
    assert float(table["weight_ft"]["wer_test_clean"]) == 51.5
    assert table["broken"]["status"] == "0/2 seeds ok"
    assert json.loads((out / "seed2" / "weight_ft" / "results.json").read_text())[
        "wer_test_clean"] == 52.0
    assert any((out / "submitit").iterdir())  # submitit's own job files
    assert "submitit job" in (out / "seed1" / "broken" / "compare.log").read_text()
