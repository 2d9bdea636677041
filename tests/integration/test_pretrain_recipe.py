"""The wav2vec 2.0 pretraining recipe: resumes where it stopped, exports a loadable backbone."""

import json
import shutil

import torch
from conftest import REPO, run_recipe
from transformers import AutoModel

SCRIPT = REPO / "recipes" / "LibriSpeech" / "pretrain" / "train.py"
ARGS = ["hparams/wav2vec2_tiny.yaml", "--synthetic_size=tiny", "--commonvoice_langs=[en,de]",
        "--batch_size=4", "--ckpt_interval_steps=2", "--ckpt_interval_minutes=0"]


def test_pretraining_resumes_and_exports(tmp_path):
    out = tmp_path / "pt"
    first = run_recipe(*ARGS, f"--output_folder={out}", "--max_steps=4", "--number_of_epochs=1",
                       script=SCRIPT)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    assert json.loads((out / "hf_model" / "training.json").read_text())["steps"] == 4
    # asked for more steps, the same command continues from its checkpoint instead of restarting
    second = run_recipe(*ARGS, f"--output_folder={out}", "--max_steps=8", "--number_of_epochs=2",
                        script=SCRIPT)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    assert "Loading a checkpoint" in second.stdout + second.stderr
    card = json.loads((out / "hf_model" / "training.json").read_text())
    assert card["steps"] == 8
    assert card["last_epoch_valid"]["contrastive_per_frame"] > 0
    model = AutoModel.from_pretrained(out / "hf_model", local_files_only=True)
    with torch.no_grad():
        hidden = model(torch.randn(1, 16000)).last_hidden_state
    assert hidden.shape == (1, 49, model.config.hidden_size)
    assert "epoch: 1" in (out / "train_log.txt").read_text()


def test_export_steps_write_the_backbone_along_the_way_once(tmp_path):
    out = tmp_path / "pt"
    args = [*ARGS[:-2], "--ckpt_interval_steps=3", "--ckpt_interval_minutes=0",
            f"--output_folder={out}", "--max_steps=4", "--number_of_epochs=1",
            "--export_steps=[2,4]"]
    first = run_recipe(*args, script=SCRIPT)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    models = {}
    for step in (2, 4):
        folder = out / f"hf_model_step{step}"
        card = json.loads((folder / "training.json").read_text())
        assert card["steps"] == step and card["seed"] == 1234 and card["train_seconds"] >= 0
        models[step] = AutoModel.from_pretrained(folder, local_files_only=True)
    weights = [dict(models[s].named_parameters()) for s in (2, 4)]
    assert weights[0].keys() == weights[1].keys()
    changed = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert "encoder.layers.0.attention.q_proj.weight" in changed
    # the final export is the model at step 4, as hf_model_step4
    final = AutoModel.from_pretrained(out / "hf_model", local_files_only=True)
    assert all(torch.equal(p, weights[1][k]) for k, p in final.named_parameters())
    assert not (out / "hf_model_step3").exists()
    # a run that stopped after step 4 but before its end-of-epoch checkpoint resumes from step 3
    # and passes step 4 again: the complete export there is kept, not written again
    for ckpt in (out / "save").glob("CKPT+*"):
        if "end-of-epoch: true" in (ckpt / "CKPT.yaml").read_text():
            shutil.rmtree(ckpt)
    card_path = out / "hf_model_step4" / "training.json"
    card_path.write_text(json.dumps({**json.loads(card_path.read_text()), "kept": True}))
    second = run_recipe(*args, script=SCRIPT)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    assert "Loading a checkpoint" in second.stdout + second.stderr
    assert json.loads(card_path.read_text())["kept"] is True
    assert json.loads((out / "hf_model" / "training.json").read_text())["steps"] == 4
