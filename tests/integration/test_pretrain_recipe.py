"""The wav2vec 2.0 pretraining recipe: resumes where it stopped, exports a loadable backbone."""

import json

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
