"""Old import paths keep working after the package was arranged in folders.

``tests/fixtures/exported_before_move/`` was written by the code before the move (a tiny random
wav2vec2, trained a step or two): two inference folders (uniform token dropping, early exit),
a SUPERB keyword-spotting classifier and a mask bank of two S3-Router tasks, with what each
gave then on the two FLAC files beside them (``*_log_probs.pt``, ``ks_result.pt``). Their
``hyperparams.yaml`` name classes by the old paths (``s3brain.inference.CTCEncoder``,
``s3brain.salad.TokenDropping``, ``s3brain.early_exit.ExitHeads``,
``s3brain.utterance.UtteranceHead``...): they must load through the redirects and give exactly
what they gave.
"""

import importlib
import shutil
import warnings
from pathlib import Path

import pytest
import soundfile as sf
import torch
from speechbrain.inference.ASR import EncoderASR
from speechbrain.inference.interfaces import foreign_class

import s3brain
from s3brain.strategies.adapters import HoulsbyAdapters, LoRALinear
from s3brain.strategies.token_dropping import TokenDropper

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "exported_before_move"


@pytest.fixture(scope="module")
def batch():
    """The two utterances, padded, with their relative lengths."""
    wavs = [torch.from_numpy(sf.read(FIXTURE / f"utt{i}.flac", dtype="float32")[0])
            for i in range(2)]
    longest = max(len(w) for w in wavs)
    padded = torch.zeros(2, longest)
    for i, wav in enumerate(wavs):
        padded[i, :len(wav)] = wav
    return padded, torch.tensor([len(w) / longest for w in wavs])


def _copy(name, tmp_path):
    """A writable copy of one exported folder (the Pretrainer links files into savedir)."""
    return shutil.copytree(FIXTURE / name, tmp_path / name)


@pytest.mark.parametrize("name", ["skip_uniform", "early_exit"])
def test_inference_folder_exported_before_the_move_gives_what_it_gave(name, batch, tmp_path):
    text = (FIXTURE / name / "hyperparams.yaml").read_text()
    assert "s3brain.inference.CTCEncoder" in text  # it does name the old paths
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asr = EncoderASR.from_hparams(source=str(_copy(name, tmp_path)),
                                      savedir=str(tmp_path / "save"))
    assert any(issubclass(w.category, DeprecationWarning) and "s3brain.inference" in
               str(w.message) for w in caught)
    with torch.no_grad():
        log_probs = asr.encode_batch(*batch)
    expected = torch.load(FIXTURE / f"{name}_log_probs.pt")
    assert log_probs.shape == expected.shape
    torch.testing.assert_close(log_probs, expected, rtol=0, atol=1e-5)


def test_classifier_exported_before_the_move_gives_what_it_gave(batch, tmp_path):
    assert "s3brain.utterance.UtteranceHead" in (FIXTURE / "ks" / "hyperparams.yaml").read_text()
    classifier = foreign_class(source=str(_copy("ks", tmp_path)), pymodule_file="custom.py",
                               classname="UtteranceClassifier", savedir=str(tmp_path / "save"))
    with torch.no_grad():
        labels, logits = classifier.classify_batch(*batch)
    expected_labels, expected_logits = torch.load(FIXTURE / "ks_result.pt")
    assert labels == expected_labels
    torch.testing.assert_close(logits["label"], expected_logits["label"], rtol=0, atol=1e-5)


def test_mask_bank_exported_before_the_move_gives_what_it_gave(batch, tmp_path):
    bank = foreign_class(source=str(_copy("bank", tmp_path)), pymodule_file="custom.py",
                         classname="S3RouterASR", savedir=str(tmp_path / "save"))
    expected = torch.load(FIXTURE / "bank_log_probs.pt")
    assert sorted(bank.tasks) == ["a", "b"]
    with torch.no_grad():
        for task in ("a", "b"):
            bank.set_task(task)
            torch.testing.assert_close(bank.encode_batch(*batch), expected[task], rtol=0,
                                       atol=1e-5)
    assert not torch.allclose(expected["a"], expected["b"])  # two tasks, two models


@pytest.mark.parametrize("old", sorted(s3brain.MOVED))
def test_every_moved_module_redirects_with_a_warning(old):
    new, names = s3brain.MOVED[old]
    module = importlib.import_module(old)
    target = importlib.import_module(new)
    public = [n for n in vars(target) if not n.startswith("_")
              and getattr(vars(target)[n], "__module__", None) == new]
    assert public, f"{new} defines nothing public"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module._warned = False
        value = getattr(module, public[0])
    assert value is getattr(target, public[0])
    assert [w for w in caught if issubclass(w.category, DeprecationWarning)]
    for name, where in names.items():
        mod, _, attr = where.partition(":")
        assert getattr(module, name) is getattr(importlib.import_module(mod), attr or name)


def test_renamed_mechanisms_keep_their_old_names_at_the_old_paths():
    from s3brain.adapters import Adapters, LoRA
    from s3brain.salad import TokenDropping

    assert (TokenDropping, Adapters, LoRA) == (TokenDropper, HoulsbyAdapters, LoRALinear)
    # the strategies of the same names are the new package's
    from s3brain.strategies import Adapters as AdaptersStrategy
    from s3brain.strategies import TokenDropping as TokenDroppingStrategy

    assert TokenDroppingStrategy is not TokenDropper and AdaptersStrategy is not Adapters


def test_the_old_inference_names_resolve_and_unknown_ones_fail():
    import s3brain.inference as inference
    from s3brain.deployment import export, modules

    with pytest.warns(DeprecationWarning):
        assert inference.CTCEncoder is modules.CTCEncoder
    with pytest.warns(DeprecationWarning):
        assert inference.export_inference is export.export_inference
    with pytest.raises(AttributeError):
        inference.no_such_name  # noqa: B018


@pytest.mark.parametrize("old, new", [("s3brain.transcribe", "s3brain.inference.transcribe"),
                                      ("s3brain.stats", "s3brain.compare.stats")])
def test_old_command_lines_still_run(old, new):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", old, "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m {new}")
