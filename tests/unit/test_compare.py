"""The comparison harness on finished runs written by the test (reused, not rerun) and on a
stand-in recipe through submitit: pooled seeds, intervals, failures (over real tiny recipe runs:
``tests/integration/test_compare_recipes.py``)."""

import csv

from s3brain.compare.cli import main as compare_main
from s3brain.compare.launch import run_strategy


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
    code = compare_main([str(recipe), "--all", "--out", str(out), "--seeds", "1", "2", "3"])
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
    # Over the seeds: the t interval of the three seeds' differences (-25, -12.5, -25 points).
    from scipy import stats as scipy_stats

    diffs = [b - a for a, b in zip(wers["weight_ft"], wers["better"])]
    half = scipy_stats.t.ppf(0.975, 2) * scipy_stats.tstd(diffs) / 3 ** 0.5
    low, high = sum(diffs) / 3 - half, sum(diffs) / 3 + half
    assert table["better"]["s_wer_test_clean"] == f"{expected:+.2f} [{low:+.2f}, {high:+.2f}]" + (
        " *" if high < 0 else "")
    assert table["weight_ft"]["s_wer_test_clean"] == ""
    md = (out / "comparison.md").read_text()
    assert "±" in md and "d_wer_test_clean" in md
    assert (out / "wer_vs_flops.png").read_bytes()[:4] == b"\x89PNG"


def test_classifiers_get_accuracy_intervals_from_their_predictions(tmp_path):
    """Classification runs (primary metric ``accuracy_test``, ``predictions_test.csv``) over
    three seeds: the pooled row's intervals are of the accuracy difference, system minus
    reference, in points (positive when the system is right more often), over the utterances
    and over the seeds, equal to the accuracies the results give."""
    import json

    from scipy import stats as scipy_stats

    recipe, out = tmp_path / "recipe", tmp_path / "cmp"
    (recipe / "hparams").mkdir(parents=True)
    (recipe / "train.py").write_text("raise SystemExit('finished runs are reused')\n")
    for name in ("weight_ft", "better"):
        (recipe / "hparams" / f"{name}.yaml").write_text(f"strategy: {name}\n")
    accuracy = {}
    for seed in (1, 2, 3):
        for name, wrong in (("weight_ft", 8 + seed), ("better", 4 + seed % 2)):
            run = out / f"seed{seed}" / name
            run.mkdir(parents=True)
            lines = ["ID,label_predicted,label_true"] + [
                f"u{i},{'no' if i < wrong else 'yes'},yes" for i in range(40)]
            (run / "predictions_test.csv").write_text("\n".join(lines) + "\n")
            accuracy.setdefault(name, []).append(100 * (40 - wrong) / 40)
            (run / "results.json").write_text(json.dumps(
                {"strategy": name, "accuracy_test": accuracy[name][-1],
                 "primary_metric": "accuracy_test", "flops_10s": 3e9}))
    code = compare_main([str(recipe), "--all", "--out", str(out), "--seeds", "1", "2", "3"])
    assert code == 0
    with open(out / "comparison.csv") as f:
        table = {row["name"]: row for row in csv.DictReader(f)}
    diffs = [b - a for a, b in zip(accuracy["weight_ft"], accuracy["better"])]
    mean = sum(diffs) / 3
    assert mean > 0
    assert table["better"]["d_accuracy_test"].startswith(f"{mean:+.2f} [")
    assert table["better"]["d_accuracy_test"].endswith("*")
    half = scipy_stats.t.ppf(0.975, 2) * scipy_stats.tstd(diffs) / 3 ** 0.5
    assert table["better"]["s_accuracy_test"] == (
        f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"
        + (" *" if mean - half > 0 else ""))
    assert table["weight_ft"]["d_accuracy_test"] == ""


def test_runs_tested_on_an_own_split_are_compared_on_it(tmp_path):
    """Runs evaluated on a split of another name alone (``wer_test_mine``, primary) are reused
    as finished, and the tables show that split's metrics and its paired intervals, greedy and
    LM, not test-clean's."""
    import json

    from speechbrain.utils.metric_stats import ErrorRateStats

    recipe, out = tmp_path / "recipe", tmp_path / "cmp"
    (recipe / "hparams").mkdir(parents=True)
    (recipe / "train.py").write_text("raise SystemExit('finished runs are reused')\n")
    for name in ("weight_ft", "better"):
        (recipe / "hparams" / f"{name}.yaml").write_text(f"strategy: {name}\n")
    refs = {f"u{i}": "one two three four five six seven eight" for i in range(20)}
    wers = {}
    for seed in (1, 2):
        for name, wrong in (("weight_ft", 2 + seed), ("better", 1)):
            run = out / f"seed{seed}" / name
            run.mkdir(parents=True)
            stats = ErrorRateStats()
            stats.append(list(refs), [["x"] * wrong + r.split()[wrong:] for r in refs.values()],
                         [r.split() for r in refs.values()])
            for file in ("wer_test-mine.txt", "wer_lm_test-mine.txt"):
                with open(run / file, "w") as f:
                    stats.write_stats(f)
            wer = round(stats.summarize("error_rate"), 2)
            wers.setdefault(name, []).append(wer)
            (run / "results.json").write_text(json.dumps(
                {"strategy": name, "wer_test_mine": wer, "wer_test_mine_lm": wer,
                 "primary_metric": "wer_test_mine", "higher_is_better": False,
                 "metric_keys": ["wer_test_mine", "wer_test_mine_lm"], "cost_seconds": 10,
                 "flops_10s": 3e9}))
    code = compare_main([str(recipe), "--all", "--out", str(out), "--seeds", "1", "2"])
    assert code == 0
    with open(out / "comparison.csv") as f:
        table = {row["name"]: row for row in csv.DictReader(f)}
    assert table["better"]["status"] == "2/2 seeds ok"
    assert float(table["weight_ft"]["wer_test_mine"]) == sum(wers["weight_ft"]) / 2
    expected = (sum(wers["better"]) - sum(wers["weight_ft"])) / 2
    for column in ("d_wer_test_mine", "d_wer_lm_test_mine", "s_wer_test_mine"):
        assert table["better"][column].startswith(f"{expected:+.2f} ["), column
        assert table["weight_ft"][column] == "", column
    header = (out / "comparison.md").read_text().splitlines()[0].split(" | ")
    assert {"wer_test_mine", "wer_test_mine_lm", "d_wer_test_mine"} <= set(header)
    assert not any("test_clean" in column for column in header)
    assert (out / "wer_vs_flops.png").exists()


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
    code = compare_main([str(recipe), "--all", "--out", str(out), "--seeds", "1", "2",
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


def test_rows_from_weight_ft_are_compared_with_its_continuation_and_get_a_detector(tmp_path):
    """With the default reference, a row that starts from the weight fine-tuning run is compared
    with the dense run given the same extra epochs (run by the harness when not asked for); a
    row from the pretrained model with weight fine-tuning. A yaml with a SALAD detector gets one
    trained per seed by the recipe's train_salad.py, teacher the seed's weight_ft run, with only
    the overrides the detector's yaml has."""
    import json

    from speechbrain.utils.metric_stats import ErrorRateStats

    recipe, out = tmp_path / "recipe", tmp_path / "cmp"
    (recipe / "hparams" / "salad").mkdir(parents=True)
    # Stand-ins: train.py finishes a run (no error files), train_salad.py writes a detector;
    # both record their command lines.
    (recipe / "train.py").write_text(
        "import json, sys, pathlib\n"
        "args = dict(a[2:].split('=', 1) for a in sys.argv[2:])\n"
        "out = pathlib.Path(args['output_folder'])\n"
        "(out / 'argv.json').write_text(json.dumps(sys.argv[1:]))\n"
        "(out / 'results.json').write_text(json.dumps({'wer_test_clean': 70.0}))\n")
    (recipe / "train_salad.py").write_text(
        "import json, sys, pathlib\n"
        "args = dict(a[2:].split('=', 1) for a in sys.argv[2:])\n"
        "out = pathlib.Path(args['output_folder'])\n"
        "(out / 'argv.json').write_text(json.dumps(sys.argv[1:]))\n"
        "(out / 'salad_detector.pt').write_bytes(b'')\n"
        "(out / 'results.json').write_text(json.dumps({'strategy': 'salad_detector'}))\n")
    (recipe / "hparams" / "salad" / "detector.yaml").write_text(
        "seed: 1\nsynthetic_size: default\nteacher_from: x\n")
    start = "init_from: !ref results/weight_ft/<seed>\n"
    for name, text in (("weight_ft", ""), ("weight_ft_continued", start), ("pruned", start),
                       ("other", ""), ("dropping", start + "salad_detector: x\n")):
        (recipe / "hparams" / f"{name}.yaml").write_text(f"seed: 1\n{text}")
    refs = {f"u{i}": "one two three four five six seven eight" for i in range(20)}
    # Words wrong per utterance: pruned is better than weight_ft, worse than the continuation.
    wrong = {"weight_ft": 4, "weight_ft_continued": 1, "pruned": 2, "other": 3}
    for seed in (1, 2):
        for name, n in wrong.items():
            run = out / f"seed{seed}" / name
            run.mkdir(parents=True)
            stats = ErrorRateStats()
            stats.append(list(refs), [["x"] * n + r.split()[n:] for r in refs.values()],
                         [r.split() for r in refs.values()])
            for split in ("test-clean", "lm_test-clean"):
                with open(run / f"wer_{split}.txt", "w") as f:
                    stats.write_stats(f)
            (run / "results.json").write_text(json.dumps(
                {"wer_test_clean": stats.summarize("error_rate")}))
    code = compare_main([str(recipe), "pruned.yaml", "other.yaml", "dropping.yaml", "--out",
                         str(out), "--seeds", "1", "2", "--", "--lm_weight=0.5"])
    assert code == 0
    with open(out / "comparison.csv") as f:
        table = {row["name"]: row for row in csv.DictReader(f)}
    assert list(table) == ["weight_ft", "pruned", "other", "dropping", "weight_ft_continued"]
    assert table["pruned"]["reference"] == "weight_ft_continued"
    assert table["pruned"]["d_wer_test_clean"].startswith("+12.50 [")  # 1 word of 8 worse
    assert table["pruned"]["d_wer_lm_test_clean"].startswith("+12.50 [")  # the LM's too
    assert table["other"]["reference"] == table["weight_ft_continued"]["reference"] == "weight_ft"
    assert table["other"]["d_wer_test_clean"].startswith("-12.50 [")
    assert table["weight_ft_continued"]["d_wer_test_clean"].startswith("-37.50 [")
    assert "reference" in (out / "comparison.md").read_text().splitlines()[0]
    for seed in (1, 2):
        detector = out / f"seed{seed}" / "salad_detector"
        argv = json.loads((detector / "argv.json").read_text())
        assert argv[1:] == [f"--output_folder={detector}", f"--seed={seed}",
                            f"--teacher_from={out / f'seed{seed}' / 'weight_ft'}"]
        argv = json.loads((out / f"seed{seed}" / "dropping" / "argv.json").read_text())
        assert f"--salad_detector={detector}" in argv and "--lm_weight=0.5" in argv
    assert table["dropping"]["status"] == "2/2 seeds ok"


def test_a_finished_run_of_another_backbone_is_not_reused(tmp_path):
    """A finished run stands for its row only when it started from the backbone the command asks
    for (``--ssl_hub``, else the yaml's, the default backbone where the yaml calls
    ``default_backbone``): otherwise the row fails with one line and nothing runs."""
    import json

    from s3brain.backbone.wrapper import default_backbone

    recipe = tmp_path / "recipe"
    (recipe / "hparams").mkdir(parents=True)
    (recipe / "train.py").write_text("raise SystemExit('finished runs are reused')\n")
    (recipe / "hparams" / "weight_ft.yaml").write_text(
        "ssl_hub: !apply:s3brain.backbone.default_backbone []\n")
    earlier = str(tmp_path / "earlier")
    (tmp_path / "earlier").mkdir()
    run = tmp_path / "out" / "weight_ft"
    run.mkdir(parents=True)
    results = {"strategy": "weight_ft", "wer_test_clean": 80.0, "ssl_hub": earlier}
    (run / "results.json").write_text(json.dumps(results))
    done, status = run_strategy(recipe, "weight_ft.yaml", run)
    assert done is None and status.startswith("failed: ")
    assert earlier in status and default_backbone() in status and "--ssl_hub=" in status
    # asked for on the command line, by another path to the same folder: reused
    (tmp_path / "link").symlink_to(earlier)
    assert run_strategy(recipe, "weight_ft.yaml", run, [f"--ssl_hub={tmp_path}/link"]) \
        == (results, "ok (reused)")
    results["ssl_hub"] = default_backbone()
    (run / "results.json").write_text(json.dumps(results))
    assert run_strategy(recipe, "weight_ft.yaml", run)[1] == "ok (reused)"
