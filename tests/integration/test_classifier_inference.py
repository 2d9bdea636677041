"""A finished SUPERB run's inference folder (``s3brain.deployment.export.export_classifier``, written by
the recipe at the end of ``main``) loaded through SpeechBrain's ``foreign_class`` as
``UtteranceClassifier`` classifies each test utterance as the recipe's own test pass did
(``predictions_test.csv``): keyword spotting after weight fine-tuning, intent (three targets)
after S3-Router (masks folded into the deployed backbone).

The runs are tiny, trained with a fast head for a few epochs so that the predictions are not all
one class (a comparison of constant predictions could not fail), and test one utterance at a
time, as ``classify_file`` does (the backbone's group-normalised feature extractor sees the
padding of a batch). The budgets were set on ``w2v2-tiny``, which the runs start from: from the
default ``w2v2-tiny-8k`` the intent run predicts one class for every utterance.
"""

import ast
import csv

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO, run_python, run_recipe

SUPERB = REPO / "recipes" / "SUPERB"
#: the backbone the budgets below were set on (the earlier default)
EARLIER = REPO / "s3brain" / "backbones" / "w2v2-tiny"
COMMON = [f"--ssl_hub={EARLIER}", "--synthetic_size=tiny", "--cost_repeats=1",
          "--ssl_frozen_steps=0", "--test_dataloader_opts={batch_size: 1}"]
#: name -> (task folder, yaml, flags)
RUNS = {"ks": ("KS", "weight_ft.yaml", ["--number_of_epochs=3", "--lr=0.01"]),
        "ic": ("IC", "s3router.yaml", ["--number_of_epochs=4", "--lr=0.05"])}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(name)``: the output folder of run ``name`` of ``RUNS`` (trained once)."""
    root = tmp_path_factory.mktemp("classifier_runs")
    done = {}

    def train(name):
        if name not in done:
            task, yaml_name, flags = RUNS[name]
            out = root / name
            proc = run_recipe(f"hparams/{yaml_name}", *COMMON, *flags, f"--output_folder={out}",
                              script=SUPERB / task / "train.py")
            assert proc.returncode == 0, proc.stderr[-3000:]
            done[name] = out
        return done[name]

    return train


def recipe_predictions(run):
    """``{utterance ID: {target: predicted label}}`` of the recipe's test pass, and the wavs."""
    with open(run / "predictions_test.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    targets = [c[: -len("_predicted")] for c in rows[0] if c.endswith("_predicted")]
    with open(run / "test.csv", encoding="utf-8") as f:  # a segment: {file, start, stop}
        wavs = {row["ID"]: row["wav"] if int(row["stop"]) < 0 else
                {"file": row["wav"], "start": int(row["start"]), "stop": int(row["stop"])}
                for row in csv.DictReader(f)}
    assert len(rows) == len(wavs)
    return {r["ID"]: {t: r[f"{t}_predicted"] for t in targets} for r in rows}, wavs


def classify(classifier, wav):
    """A file with ``classify_file``; a segment (keyword spotting's ``_silence_`` clips of a
    noise file) read as the recipe reads it, with ``classify_batch``."""
    from s3brain.backbone.audio import read_audio

    if isinstance(wav, str):
        return classifier.classify_file(wav)
    return classifier.classify_batch(read_audio(wav, 16000)[None])[0][0]


def load_classifier(folder, savedir):
    """The inference folder through SpeechBrain's ``foreign_class``."""
    from speechbrain.inference.interfaces import foreign_class

    return foreign_class(source=str(folder), pymodule_file="custom.py",
                         classname="UtteranceClassifier", savedir=str(savedir))


@pytest.mark.parametrize("name, targets", [("ks", ["label"]),
                                           ("ic", ["action", "object", "location"])])
def test_predictions_equal_the_recipes_test_pass(name, targets, trained, tmp_path):
    run = trained(name)
    folder = run / "inference"  # written by the recipe itself
    assert {p.name for p in folder.iterdir()} == {
        "hyperparams.yaml", "classifier.ckpt", "custom.py",
        *(f"label_encoder_{t}.ckpt" for t in targets)}
    classifier = load_classifier(folder, tmp_path / "classifier")
    assert classifier.targets == targets
    expected, wavs = recipe_predictions(run)
    assert len(expected) >= 4
    distinct = {tuple(p.values()) for p in expected.values()}
    assert len(distinct) > 1, f"{name}: every prediction is {distinct}; the test could not fail"
    for uid, labels in expected.items():
        assert classify(classifier, wavs[uid]) == labels, (name, uid)
    if name == "ic":  # the deployed backbone is the masked one, folded into plain weights
        ffn = {k: w for k, w in classifier.mods.state_dict().items() if "feed_forward" in k}
        assert ffn and all(k.endswith((".weight", ".bias")) and "parametrizations" not in k
                           for k in ffn)
        assert any((w == 0).any() for k, w in ffn.items() if k.endswith(".weight"))


def test_batch_and_any_rate(trained, tmp_path):
    """A batch of keyword clips (one length: no padding) classifies as each file alone; an
    8 kHz stereo file reads as the recipe reads it and classifies as that signal does."""
    from s3brain.backbone.audio import read_audio, resample

    run = trained("ks")
    classifier = load_classifier(run / "inference", tmp_path / "classifier")
    expected, wavs = recipe_predictions(run)
    signals = [read_audio(wavs[uid], 16000) for uid in expected]
    assert len({len(s) for s in signals}) == 1
    labels, log_probs = classifier.classify_batch(torch.stack(signals), torch.ones(len(signals)))
    assert labels == list(expected.values())
    assert log_probs["label"].shape == (len(signals), 12)

    data, rate = sf.read(next(w for w in wavs.values() if isinstance(w, str)), dtype="float32")
    low = resample(torch.from_numpy(data), rate, 8000).numpy()
    stereo = tmp_path / "stereo_8k.wav"
    sf.write(stereo, np.stack([low, 0.5 * low], 1), 8000)
    signal = read_audio(stereo, 16000)
    assert classifier.classify_file(str(stereo)) == classifier.classify_batch(signal[None])[0][0]


def test_readme_snippet_runs_as_written(trained, tmp_path):
    import re
    import shutil

    run = trained("ic")
    text = (SUPERB / "README.md").read_text(encoding="utf-8")
    section = text.split("## Using a trained model", 1)[1].split("\n## ", 1)[0]
    [snippet] = re.findall(r"```python\n(.*?)```", section, re.S)
    folder = tmp_path / "results" / "SUPERB" / "intent_classification" / "s3router"
    folder.mkdir(parents=True)
    (folder / "1986").symlink_to(run)
    expected, wavs = recipe_predictions(run)
    uid = next(iter(expected))
    shutil.copy(wavs[uid], tmp_path / "command.wav")
    proc = run_python("-c", snippet, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ast.literal_eval(proc.stdout.strip().splitlines()[-1]) == expected[uid]
