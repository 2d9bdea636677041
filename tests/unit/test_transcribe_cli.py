"""``python -m s3brain.inference.transcribe`` on folders of every kind, with the exported
folders of ``tests/fixtures/exported_before_move`` (their expected outputs beside them): a CTC
folder's transcripts, a mask bank's task, and a SUPERB classifier's labels."""

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import torch

from s3brain.inference.transcribe import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "exported_before_move"


def _run(folder, *args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(folder), *args, "--no-progress"])
    return status, out.getvalue().splitlines(), err.getvalue()


@pytest.fixture
def copy_of(tmp_path):
    return lambda name: shutil.copytree(FIXTURE / name, tmp_path / name)


def test_a_classifier_folder_gives_each_file_its_labels(copy_of):
    files = [str(FIXTURE / f"utt{i}.flac") for i in range(2)]
    status, lines, _ = _run(copy_of("ks"), *files)
    expected, _ = torch.load(FIXTURE / "ks_result.pt")
    assert status == 0
    assert lines == [f"{f}\t" + " ".join(f"{t}={label}" for t, label in labels.items())
                     for f, labels in zip(files, expected)]


def test_a_bank_task_and_a_wrong_task(copy_of):
    bank = copy_of("bank")
    status, lines, _ = _run(bank, str(FIXTURE / "utt0.flac"), "--task", "b")
    assert status == 0 and len(lines) == 1 and lines[0].startswith(str(FIXTURE / "utt0.flac"))
    status, lines, err = _run(bank, str(FIXTURE / "utt0.flac"), "--task", "nope")
    assert status == 2 and not lines and err.startswith("ERROR:") and "nope" in err
