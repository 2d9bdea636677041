"""LoRA and Houlsby adapters on a SUPERB task (keyword spotting, tiny data, a few epochs): only
the added tensors and the head change, the stored bytes per task are exactly theirs, and the
exported classifier (LoRA merged into plain weights, the adapters kept) classifies each test
utterance as the recipe's own test pass did.

The head trains fast (``--lr=0.01``) so that the predictions are not all one class, and the test
pass reads one utterance at a time, as ``classify_file`` does.
"""

import csv
import json

import pytest
import torch
from conftest import REPO, run_recipe

from s3brain.backbone.wrapper import load_ssl

KS = REPO / "recipes" / "SUPERB" / "KS"
#: name -> (yaml, flags, wrapped layers per block, where the wrapped layer's own tensors sit)
RUNS = {"lora": ("lora.yaml", ["--lora_rank=2", "--lora_alpha=2.0"], 6, "pretrained_module."),
        "adapter": ("adapter.yaml", ["--adapter_bottleneck=4"], 1, "pretrained_linear.")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{name: output folder}`` of both runs (trained once)."""
    root = tmp_path_factory.mktemp("superb_peft")
    done = {}
    for name, (yaml, flags, _, _) in RUNS.items():
        out = root / name
        proc = run_recipe(f"hparams/{yaml}", "--synthetic_size=tiny", "--cost_repeats=1",
                          "--number_of_epochs=3", "--lr=0.01",
                          "--test_dataloader_opts={batch_size: 1}", *flags,
                          f"--output_folder={out}", script=KS / "train.py")
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        done[name] = out
    return done


def best_checkpoint(run):
    """The tensors of the checkpoint the recipe tested: backbone (``ssl``) and head."""
    from s3brain.utils.checkpoint import Checkpointer

    best = Checkpointer(run / "save").find_checkpoint(min_key="error")
    return (torch.load(best.paramfiles["ssl"], map_location="cpu", weights_only=True),
            torch.load(best.paramfiles["model"], map_location="cpu", weights_only=True))


@pytest.mark.parametrize("name", list(RUNS))
def test_only_the_added_tensors_and_head_are_stored(name, runs, tmp_path):
    run = runs[name]
    _, _, per_block, wrapped = RUNS[name]
    results = json.loads((run / "results.json").read_text())
    assert results["strategy"] == name
    ssl_state, head_state = best_checkpoint(run)
    pretrained = {f"model.{k}": v for k, v in
                  load_ssl(results["ssl_hub"], tmp_path / "hub").model.state_dict().items()}
    added = {k: v for k, v in ssl_state.items() if ".adapter_" in k}
    blocks = sum(1 for k in pretrained if k.endswith(".final_layer_norm.weight"))
    assert len({k.split(".adapter_")[0] for k in added}) == per_block * blocks
    # every backbone tensor is the pretrained one; the added ones trained
    for key, tensor in ssl_state.items():
        if key not in added:
            torch.testing.assert_close(tensor, pretrained[key.replace(wrapped, "")], rtol=0,
                                       atol=0, msg=key)
    assert any(v.abs().sum() > 0 for k, v in added.items() if ".adapter_up_proj.weight" in k)
    stored = sum(t.numel() * t.element_size() for t in [*added.values(), *head_state.values()])
    assert results["storage_bytes_per_task"] == stored
    assert results["params_trainable"] == sum(t.numel() for t in
                                              [*added.values(), *head_state.values()])


@pytest.mark.parametrize("name", list(RUNS))
def test_export_classifies_as_the_recipe(name, runs, tmp_path):
    from speechbrain.inference.interfaces import foreign_class

    run = runs[name]
    folder = run / "inference"  # written by the recipe itself
    classifier = foreign_class(source=str(folder), pymodule_file="custom.py",
                               classname="UtteranceClassifier", savedir=str(tmp_path / "c"))
    state = classifier.mods.state_dict()
    if name == "lora":  # merged: the plain backbone's keys, nothing of LoRA
        assert not any(".adapter_" in k or "pretrained_module" in k for k in state)
    else:  # a Houlsby adapter is nonlinear: the deployed backbone keeps it
        assert any(".adapter_up_proj." in k for k in state)
    with open(run / "predictions_test.csv", encoding="utf-8") as f:
        expected = {r["ID"]: r["label_predicted"] for r in csv.DictReader(f)}
    with open(run / "test.csv", encoding="utf-8") as f:
        wavs = {r["ID"]: r["wav"] for r in csv.DictReader(f) if int(r["stop"]) < 0}
    assert len(set(expected.values())) > 1, "every prediction is one class: could not fail"
    assert len(wavs) >= 4
    for uid, wav in wavs.items():
        assert classifier.classify_file(wav) == {"label": expected[uid]}, uid
