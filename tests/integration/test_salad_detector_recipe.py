"""The SALAD detector recipe (``recipes/LibriSpeech/train_salad.py``) resumes a killed run: run
again with more epochs into the same folder, it starts after its last checkpointed epoch and ends
with the detectors, bit for bit, of a run that was never stopped."""

import json
import re

import pytest
import torch
from conftest import RECIPE, run_python, run_recipe

DETECTOR_YAML = RECIPE / "hparams" / "salad" / "detector.yaml"

#: a teacher checkpoint in seconds: the detector yaml's own backbone and untrained head, saved as
#: a weight fine-tuning run saves its best checkpoint (its random head changes symbol often, so
#: the frame labels have both classes)
WRITE_TEACHER = """
import sys
from hyperpyyaml import load_hyperpyyaml
from s3brain.utils.checkpoint import Checkpointer
yaml, out = sys.argv[1:3]
with open(yaml) as f:
    hparams = load_hyperpyyaml(f, {"output_folder": out, "synthetic_size": "tiny"})
Checkpointer(out + "/save", {"ssl": hparams["ssl"], "model": hparams["model"]}).save_checkpoint(
    meta={"WER": 100.0})
"""


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A folder with a checkpoint that ``--teacher_from`` loads."""
    out = tmp_path_factory.mktemp("teacher")
    proc = run_python("-c", WRITE_TEACHER, DETECTOR_YAML, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def train_detector(out, epochs, teacher):
    """Run the detector recipe on the tiny corpus for ``epochs`` epochs into ``out``."""
    proc = run_recipe(str(DETECTOR_YAML), "--synthetic_size=tiny", f"--teacher_from={teacher}",
                      f"--number_of_epochs={epochs}", f"--output_folder={out}",
                      script=RECIPE / "train_salad.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def logged_epochs(out):
    """The epochs of ``train_log.txt``, in the order they were trained."""
    return [int(m) for m in re.findall(r"^epoch: (\d+),", (out / "train_log.txt").read_text(),
                                       re.MULTILINE)]


def test_a_stopped_detector_run_resumes_where_it_stopped(tiny_corpus, teacher, tmp_path):
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    train_detector(resumed, 1, teacher)
    first = sorted((resumed / "save").glob("CKPT+*"))
    assert len(first) == 1 and (first[0] / "counter.ckpt").read_text().strip() == "1"
    results = json.loads((resumed / "results.json").read_text())
    assert 0.0 < results["non_salient_share_train"] < 1.0  # both classes to learn
    first_log = (resumed / "log.txt").read_text()

    train_detector(resumed, 2, teacher)
    second_log = (resumed / "log.txt").read_text()[len(first_log):]  # the log appends
    loaded = re.search(r"Loading a checkpoint from (\S+)", second_log)
    assert loaded and loaded.group(1) == str(first[0])  # resumed from epoch 1's checkpoint
    assert logged_epochs(resumed) == [1, 2]  # epoch 1 not trained again

    train_detector(straight, 2, teacher)
    assert logged_epochs(straight) == [1, 2]
    for name in ("salad_detector.pt", "salad_detector_alpha1.pt"):
        a, b = (torch.load(run / name, weights_only=True) for run in (resumed, straight))
        assert a["state_dict"].keys() == b["state_dict"].keys()
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
        assert a["info"]["stats"] == b["info"]["stats"]
