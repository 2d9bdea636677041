"""The recipe tests' check that ``results.json`` reports the error rates of the files the recipe
wrote (``tests/conftest.py``: ``read_error_file``, ``assert_results_match_error_files``), on
files written by SpeechBrain's own ``ErrorRateStats.write_stats``."""

import json

import pytest
from conftest import assert_results_match_error_files, error_file_key, read_error_file


def write_error_file(path, hypotheses, references):
    """An error-rate file as the recipes write it; its rate (the unrounded float)."""
    from speechbrain.utils.metric_stats import ErrorRateStats

    stats = ErrorRateStats()
    stats.append([f"utt{i}" for i in range(len(references))], hypotheses, references)
    with open(path, "w") as f:
        stats.write_stats(f)
    return stats.summarize("error_rate")


@pytest.fixture
def run(tmp_path):
    """A run folder: greedy and LM files of test-clean (1 and 2 of 7 words wrong: 14.29,
    28.57), a PER file (3 of 9 phonemes: 33.33), and results.json as split_results rounds."""
    refs = [["A", "B", "C"], ["D", "E", "F", "G"]]
    rates = {
        "wer_test_clean": write_error_file(tmp_path / "wer_test-clean.txt",
                                           [["A", "B", "C"], ["D", "E", "F", "X"]], refs),
        "wer_test_clean_lm": write_error_file(tmp_path / "wer_lm_test-clean.txt",
                                              [["A", "B"], ["D", "E", "F", "X"]], refs),
        "per_test": write_error_file(tmp_path / "per_test.txt", [list("abcdef")],
                                     [list("abcdefghi")]),
    }
    results = {"metric_keys": ["cer_test_clean", *rates], "cer_test_clean": 5.0,
               **{key: round(rate, 2) for key, rate in rates.items()}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "train_log.txt").write_text("epoch: 1 - train loss: 1.00\n")
    return tmp_path


def test_the_summary_line_is_read(run):
    assert read_error_file(run / "wer_test-clean.txt") == (14.29, 1, 7)
    assert read_error_file(run / "wer_lm_test-clean.txt") == (28.57, 2, 7)
    assert read_error_file(run / "per_test.txt") == (33.33, 3, 9)
    (run / "other.txt").write_text("WER: 12\n")
    with pytest.raises(ValueError, match="first line"):
        read_error_file(run / "other.txt")


def test_file_names_give_the_result_keys():
    assert error_file_key("wer_test-other.txt") == "wer_test_other"
    assert error_file_key("wer_lm_test-other.txt") == "wer_test_other_lm"
    assert error_file_key("per_test.txt") == "per_test"
    assert error_file_key("train_log.txt") is None


def test_results_that_match_their_files_pass(run):
    summaries = assert_results_match_error_files(run)
    assert summaries == {"wer_test_clean": (14.29, 1, 7), "wer_test_clean_lm": (28.57, 2, 7),
                         "per_test": (33.33, 3, 9)}


@pytest.mark.parametrize("key, value", [("wer_test_clean", 14.28), ("wer_test_clean_lm", 14.29),
                                        ("per_test", 100.0)])
def test_a_rate_other_than_its_file_fails(run, key, value):
    results = json.loads((run / "results.json").read_text())
    results[key] = value
    (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(AssertionError, match=key):
        assert_results_match_error_files(run)


def test_a_rate_without_its_file_or_a_file_without_its_rate_fails(run):
    (run / "wer_lm_test-clean.txt").unlink()
    with pytest.raises(AssertionError, match="no file for"):
        assert_results_match_error_files(run)
    write_error_file(run / "wer_test-other.txt", [["A"]], [["B"]])
    with pytest.raises(AssertionError, match="has no wer_test_other"):
        assert_results_match_error_files(run)


def test_a_file_whose_rate_is_not_its_counts_fails(run):
    path = run / "wer_test-clean.txt"
    path.write_text(path.read_text().replace("[ 1 / 7,", "[ 2 / 7,", 1))
    with pytest.raises(AssertionError, match="wer_test-clean.txt"):
        assert_results_match_error_files(run)
