"""The performance check of a recipe row (``tests/conftest.py``: SpeechBrain's
``check_performance`` semantics) and the rows' entries (``tests/recipes/README.md``)."""

import json
import shlex
import sys

import pytest
from conftest import (
    REPO,
    check_performance,
    check_threshold,
    extract_value,
    parse_performance_check,
    performance_value,
    recipe_index_rows,
)

sys.path.insert(0, str(REPO / "tools"))
import performance_checks  # noqa: E402

TRAIN_LOG = (
    "epoch: 1, lr_model: 2.00e-03, lr_ssl: 1.00e-04 - train loss: 7.54 - valid loss: 4.71, "
    "valid CER: 1.00e+02, valid WER: 1.00e+02\n"
    "epoch: 2, lr_model: 2.00e-03, lr_ssl: 1.00e-04 - train loss: 4.23 - valid loss: 3.37, "
    "valid CER: 1.00e+02, valid WER: 1.00e+02, valid kept_share: 4.03e-01\n"
    "Epoch loaded: 2, test split: test-clean - test loss: 3.31, test CER: 1.00e+02\n")


@pytest.fixture
def run(tmp_path):
    """A finished run's folder: a train log and a results file."""
    (tmp_path / "train_log.txt").write_text(TRAIN_LOG)
    (tmp_path / "results.json").write_text(json.dumps(
        {"sparsity": 0.5, "sparsity_linear": 0.4998, "storage_bytes_per_task": 377036,
         "storage_share_of_backbone": 0.047}, indent=2))
    return tmp_path


def test_extract_value_reads_speechbrains_docstring_example():
    line = "Epoch loaded: 49 - test loss: 4.71e-01, test PER: 14.21"
    assert float(extract_value(line, "test loss")) == pytest.approx(0.471)
    assert float(extract_value(line, "test PER")) == pytest.approx(14.21)
    assert extract_value(line, "valid loss") is None


def test_extract_value_reads_only_numbers_with_a_decimal_point():
    assert extract_value("epoch: 2 - train loss: 4", "train loss") is None
    assert extract_value('  "storage_bytes_per_task": 377036,', '"storage_bytes_per_task"') is None
    assert extract_value('  "sparsity_linear": 0.4998,', '"sparsity_linear"') == "0.4998"
    assert extract_value("train loss: -1.5e-3", "train loss") == "-1.5e-3"


@pytest.mark.parametrize("threshold, value, expected", [
    ("<=15", 15.0, True), ("<=15", 15.01, False), ("<15", 15.0, False), (">=0.485", 0.485, True),
    (">=0.485", 0.4849, False), (">0.5", 0.5, False), ("==4.00", 4.0, True), ("15", 15.0, False)])
def test_check_threshold(threshold, value, expected):
    assert check_threshold(threshold, value) is expected


def test_a_loss_within_its_threshold_passes_and_above_it_fails(run):
    assert check_performance("file_exists=[train_log.txt],performance_check=[train_log.txt, "
                             "train loss, <=4.36, epoch: 2]", run) is None
    problem = check_performance("performance_check=[train_log.txt, train loss, <=4.2, epoch: 2]",
                                run)
    assert problem == "train loss of train_log.txt is 4.23, outside the threshold <=4.2 (epoch: 2)"


def test_the_first_line_of_the_epoch_counts(run):
    # only the first line holds "epoch: 1": its train loss, 7.54, is read
    assert check_performance("performance_check=[train_log.txt, train loss, <=7.54, epoch: 1]",
                             run) is None
    assert "7.54" in check_performance(
        "performance_check=[train_log.txt, train loss, <=7.5, epoch: 1]", run)


def test_epoch_minus_one_reads_the_last_line(run):
    check = parse_performance_check("performance_check=[train_log.txt, test loss, <=4, epoch: -1]")
    assert performance_value(check, run) == pytest.approx(3.31)


def test_only_the_first_entry_counts(run):
    checks = ("performance_check=[train_log.txt, train loss, <=5, epoch: 2],"
              "performance_check=[train_log.txt, train loss, <=1, epoch: 2]")
    assert check_performance(checks, run) is None
    assert check_performance("file_exists=[train_log.txt]", run) is None


def test_a_results_json_key_is_read_from_its_own_line(run):
    checks = ('performance_check=[results.json, "sparsity_linear", >=0.485, '
              '"sparsity_linear": 0]')
    assert check_performance(checks, run) is None
    assert "0.4998" in check_performance(checks.replace(">=0.485", ">=0.5"), run)


@pytest.mark.parametrize("checks, says", [
    ("performance_check=[missing.txt, train loss, <=5, epoch: 2]", "does not exist"),
    ("performance_check=[train_log.txt, train loss, <=5, epoch: 3]", "no entries epoch: 3"),
    ("performance_check=[train_log.txt, test PER, <=5, epoch: 2]", "no value of test PER"),
])
def test_a_check_that_cannot_read_its_figure_fails(run, checks, says):
    assert says in check_performance(checks, run)


def test_thresholds_lie_the_margin_away_on_the_worse_side():
    assert performance_checks.MARGIN == 0.03
    assert performance_checks.threshold(4.23, "<=") == "<=4.36"
    assert performance_checks.threshold(0.5, ">=") == ">=0.485"
    assert performance_checks.threshold(0.047, "<=") == "<=0.0485"
    assert performance_checks.threshold(0.1591, ">=") == ">=0.154"
    new = "performance_check=[x, y, <=1, e: 2]"
    assert performance_checks.with_entry("file_exists=[a,b]", new) == f"file_exists=[a,b],{new}"
    old = "file_exists=[a],performance_check=[x, y, <=9, e: 2]"
    assert performance_checks.with_entry(old, new) == f"file_exists=[a],{new}"


@pytest.mark.parametrize("dataset, row", recipe_index_rows(),
                         ids=lambda r: r if isinstance(r, str) else r["Hparam_file"])
def test_every_row_checks_a_figure_in_a_debug_run(dataset, row):
    """Every row has the performance check tools/performance_checks.py sets (its threshold
    aside) and, as a row with one runs without --debug upstream unless it gives it, --debug."""
    assert "--debug" in shlex.split(row["test_debug_flags"])
    check = parse_performance_check(row["test_debug_checks"])
    assert check is not None, f"{row['Hparam_file']}: no performance_check"
    name = next(f for f in shlex.split(row["test_debug_flags"])
                if f.startswith("--output_folder=")).rsplit("/", 1)[-1]
    file, variable, direction, line = performance_checks.FIGURES.get(name,
                                                                     performance_checks.LOSS)
    assert (check.file, check.variable, check.epoch) == (file, variable, line)
    assert check.threshold.startswith(direction)
    float(check.threshold[len(direction):])
