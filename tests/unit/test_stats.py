"""Seeds and intervals: per-utterance errors from SpeechBrain's WER files, paired bootstrap."""

import numpy as np
import pytest
from speechbrain.utils.metric_stats import ErrorRateStats

from s3brain.compare.stats import mean_std, paired_bootstrap, utterance_errors


def _wer_file(path, refs, hyps):
    stats = ErrorRateStats()
    stats.append(list(refs), [hyps[k].split() for k in refs], [refs[k].split() for k in refs])
    with open(path, "w") as f:
        stats.write_stats(f)
    return path


def test_utterance_errors_read_back_what_speechbrain_scored(tmp_path):
    refs = {"u1": "the cat sat", "u2": "a dog ran far", "u3": "hello"}
    hyps = {"u1": "the cat sat", "u2": "a dig ran", "u3": "hello there world"}
    errors = utterance_errors(_wer_file(tmp_path / "wer_test.txt", refs, hyps))
    # u2: one substitution, one deletion; u3: two insertions
    assert errors == {"u1": (0, 3), "u2": (2, 4), "u3": (2, 1)}
    total = sum(e for e, _ in errors.values()) / sum(n for _, n in errors.values())
    first = open(tmp_path / "wer_test.txt").readline()
    assert f"{100 * total:.2f}" in first  # the file's own corpus WER


def _runs(rng, utterances, rate):
    return {f"u{i}": (int(rng.binomial(10, rate)), 10) for i in range(utterances)}


def test_identical_runs_give_a_zero_interval():
    rng = np.random.default_rng(0)
    run = _runs(rng, 50, 0.3)
    result = paired_bootstrap([run], [run], resamples=300)
    assert result["difference"] == result["low"] == result["high"] == 0.0
    assert not result["excludes_zero"]


def test_a_system_better_on_every_utterance_excludes_zero():
    rng = np.random.default_rng(1)
    ref = _runs(rng, 40, 0.5)
    better = {k: (max(0, e - 2), n) for k, (e, n) in ref.items()}
    result = paired_bootstrap([ref], [better], resamples=500)
    assert result["excludes_zero"] and result["high"] < 0
    assert result["low"] <= result["difference"] <= result["high"]


def test_more_seeds_narrow_the_interval_of_a_noisy_difference():
    rng = np.random.default_rng(2)
    seeds = [(_runs(rng, 60, 0.40), _runs(rng, 60, 0.43)) for _ in range(4)]
    one = paired_bootstrap([seeds[0][0]], [seeds[0][1]], resamples=1000)
    four = paired_bootstrap([r for r, _ in seeds], [s for _, s in seeds], resamples=1000)
    assert four["utterances"] == 4 * one["utterances"]
    assert four["high"] - four["low"] < 0.75 * (one["high"] - one["low"])


def test_runs_of_different_test_sets_are_refused():
    with pytest.raises(ValueError, match="not the same test set"):
        paired_bootstrap([{"u1": (1, 5)}], [{"u1": (1, 6)}])
    with pytest.raises(ValueError, match="no utterance"):
        paired_bootstrap([{"u1": (1, 5)}], [{"u2": (1, 5)}])


def test_mean_std():
    assert mean_std([3.0]) == (3.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and abs(std - np.std([1, 2, 3, 4], ddof=1)) < 1e-12


def test_accuracy_interval_is_the_negated_error_rate_interval(tmp_path):
    """0/1 errors per utterance (one "word" each): the accuracy difference is minus the
    error-rate difference, its interval the mirror image; seeds with a missing file are left
    out of the pooled interval."""
    from s3brain.compare.stats import (
        paired_bootstrap_accuracy,
        paired_bootstrap_files,
        prediction_errors,
    )

    rng = np.random.default_rng(3)
    ref = {f"u{i}": (int(rng.random() < 0.4), 1) for i in range(50)}
    sys_ = {f"u{i}": (int(rng.random() < 0.2), 1) for i in range(50)}
    errors = paired_bootstrap([ref], [sys_], resamples=400)
    accuracy = paired_bootstrap_accuracy([ref], [sys_], resamples=400)
    acc = lambda run: 100.0 * (1 - sum(e for e, _ in run.values()) / len(run))  # noqa: E731
    assert accuracy["difference"] == pytest.approx(acc(sys_) - acc(ref))
    assert (accuracy["low"], accuracy["high"]) == (-errors["high"], -errors["low"])
    assert accuracy["excludes_zero"] == errors["excludes_zero"]

    def write(path, run):
        lines = ["ID,label_predicted,label_true"]
        lines += [f"{uid},{'no' if wrong else 'yes'},yes" for uid, (wrong, _) in run.items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    a, b = write(tmp_path / "a.csv", ref), write(tmp_path / "b.csv", sys_)
    assert prediction_errors(a) == ref
    pooled = paired_bootstrap_files([(a, b), (a, tmp_path / "missing.csv")],
                                    read=prediction_errors, accuracy=True, resamples=400)
    assert pooled == accuracy  # the seed with a missing run is left out
    assert paired_bootstrap_files([(a, tmp_path / "missing.csv")]) is None
    with pytest.raises(ValueError, match="no predictions"):
        prediction_errors(write(tmp_path / "empty.csv", {}))


def test_seed_interval_files_pairs_the_complete_seeds_only(tmp_path):
    """Seeds with one file missing are left out; with fewer than two pairs there is no
    interval; otherwise the t interval of the files' corpus WER differences."""
    from s3brain.compare.stats import seed_interval, seed_interval_files

    refs = {f"u{i}": "one two three four" for i in range(5)}
    pairs = []
    for seed, wrong in enumerate((1, 2, 2)):
        hyps = {k: " ".join(["x"] * wrong + r.split()[wrong:]) for k, r in refs.items()}
        pairs.append((_wer_file(tmp_path / f"ref{seed}.txt", refs, refs),
                      _wer_file(tmp_path / f"sys{seed}.txt", refs, hyps)))
    assert seed_interval_files(pairs[:1]) is None
    assert seed_interval_files(pairs[:1] + [(tmp_path / "missing.txt", pairs[1][1])]) is None
    assert seed_interval_files(pairs) == seed_interval([25.0, 50.0, 50.0])
    assert seed_interval_files(pairs + [(pairs[0][0], tmp_path / "missing.txt")])["seeds"] == 3


def test_compare_rows_pairs_two_comparisons_seed_by_seed(tmp_path, capsys):
    """``python -m s3brain.compare.stats``: a row of one comparison folder against a row of another,
    seed by seed (a seed only one side ran is left out): the per-seed differences are the
    files' corpus WER differences, the intervals those of ``paired_bootstrap`` and
    ``seed_interval`` on the same runs; a run folder does not pair with a row of seeds."""
    from s3brain.compare.stats import compare_rows, main, seed_interval

    refs = {f"u{i}": "one two three four" for i in range(8)}

    def hyps(wrong):
        return {k: " ".join(["x"] * wrong + r.split()[wrong:]) for k, r in refs.items()}

    for seed, (ref_wrong, sys_wrong) in {1: (0, 1), 2: (1, 3), 3: (1, 2)}.items():
        for out, row, wrong in (("a", "dense", ref_wrong), ("b", "pruned", sys_wrong)):
            if (out, seed) == ("b", 3):
                continue  # the system did not run seed 3
            run = tmp_path / out / f"seed{seed}" / row
            run.mkdir(parents=True)
            _wer_file(run / "wer_test-clean.txt", refs, hyps(wrong))
            _wer_file(run / "wer_lm_test-clean.txt", refs, refs)
    results = compare_rows(tmp_path / "a" / "dense", tmp_path / "b" / "pruned", resamples=200)
    assert [r["file"] for r in results] == ["wer_test-clean.txt", "wer_lm_test-clean.txt"]
    greedy, lm = results
    assert greedy["per_seed"] == {"1": 25.0, "2": 50.0}
    assert greedy["seeds"] == seed_interval([25.0, 50.0])
    runs = [(utterance_errors(tmp_path / "a" / f"seed{s}" / "dense" / "wer_test-clean.txt"),
             utterance_errors(tmp_path / "b" / f"seed{s}" / "pruned" / "wer_test-clean.txt"))
            for s in (1, 2)]
    expected = paired_bootstrap([a for a, _ in runs], [b for _, b in runs], resamples=200)
    assert greedy["bootstrap"] == expected and expected["utterances"] == 16
    assert lm["per_seed"] == {"1": 0.0, "2": 0.0} and not lm["bootstrap"]["excludes_zero"]

    (tmp_path / "b" / "seed3" / "pruned").mkdir(parents=True)  # still training: no files
    assert compare_rows(tmp_path / "a" / "dense", tmp_path / "b" / "pruned",
                        resamples=200)[0]["per_seed"] == {"1": 25.0, "2": 50.0}

    one = compare_rows(tmp_path / "a" / "seed3" / "dense", tmp_path / "a" / "seed2" / "dense")
    assert one[0]["per_seed"] == {"-": 0.0} and one[0]["seeds"] is None
    with pytest.raises(ValueError, match="pairs with a run folder"):
        compare_rows(tmp_path / "a" / "seed1" / "dense", tmp_path / "b" / "pruned")
    with pytest.raises(ValueError, match="no seed has a run of both"):
        compare_rows(tmp_path / "a" / "dense", tmp_path / "b" / "missing")

    main([str(tmp_path / "a" / "dense"), str(tmp_path / "b" / "pruned"), "--resamples", "200"])
    printed = capsys.readouterr().out
    assert "| +25.00 / +50.00 (1, 2) | +37.50 [" in printed and "] * |" in printed


def test_compare_rows_joins_a_sweep_cell_with_its_seed_siblings(tmp_path):
    """``studies/s3router_sweep/s3router_sweep.py --seeds`` keeps the yamls' seed in
    ``<split>/<cell>`` and the others in ``<split>/seed<S>/<cell>``: such a run folder is paired
    under the seed its ``hyperparams.yaml`` ran with, beside its siblings, and against a
    comparison row too."""
    from s3brain.compare.stats import compare_rows, run_seed, seed_runs

    refs = {f"u{i}": "one two three four" for i in range(4)}
    wrong = {"u0": "x two three four", "u1": "one two three four", "u2": "one two three four",
             "u3": "one two three four"}
    two_wrong = dict(wrong, u1="one x three four")
    split = tmp_path / "train-10m"
    for cell, hyps in (("dense", refs), ("sparse", wrong)):
        (split / cell).mkdir(parents=True)
        (split / cell / "hyperparams.yaml").write_text("strategy: x\nseed: 1986\nlr: 1\n")
        _wer_file(split / cell / "wer_test-clean.txt", refs, hyps)
        run = split / "seed1987" / cell
        run.mkdir(parents=True)
        _wer_file(run / "wer_test-clean.txt", refs, refs if cell == "dense" else two_wrong)
    assert run_seed(split / "dense") == "1986" and run_seed(split / "seed1987" / "dense") is None
    assert list(seed_runs(split / "sparse")) == ["1986", "1987"]
    greedy, = compare_rows(split / "dense", split / "sparse", resamples=200)
    assert greedy["per_seed"] == {"1986": 6.25, "1987": 12.5}  # 1 and 2 of 16 words

    comparison = tmp_path / "cmp"  # a comparison row of the same seeds
    for seed in ("1986", "1987"):
        (comparison / f"seed{seed}" / "dense").mkdir(parents=True)
        _wer_file(comparison / f"seed{seed}" / "dense" / "wer_test-clean.txt", refs, refs)
    assert compare_rows(comparison / "dense", split / "sparse",
                        resamples=200)[0]["per_seed"] == {"1986": 6.25, "1987": 12.5}

    (split / "seed1986" / "dense").mkdir(parents=True)  # the same seed twice: refused
    with pytest.raises(ValueError, match="cannot join"):
        seed_runs(split / "dense")
