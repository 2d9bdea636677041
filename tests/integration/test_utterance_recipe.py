"""The training-loop hooks of the strategies in the utterance-level Brain (a SUPERB recipe run)."""

import json

import torch
from conftest import REPO, run_recipe


def test_utterance_brain_runs_the_pruning_hooks(tiny_corpus, tmp_path):
    """PARP in a SUPERB recipe: re-pruned before every evaluation, so the checkpoint that was
    evaluated has exactly the target sparsity even though its zeroed weights kept training."""
    recipe = REPO / "recipes" / "SUPERB" / "KS"
    yaml = tmp_path / "parp.yaml"
    yaml.write_text((recipe / "hparams" / "weight_ft.yaml").read_text() + """
strategies:
    - !new:s3brain.strategies.Pruning
        schedule: !new:s3brain.strategies.pruning.schedules.PruneAdjustReprune
            sparsity: 0.5
            interval_steps: 1000  # never during these few steps: only before_eval re-prunes
""")
    out = tmp_path / "run"
    proc = run_recipe(str(yaml), "--synthetic_size=tiny", "--number_of_epochs=1",
                      "--cost_repeats=1", "--ssl_frozen_steps=0", f"--output_folder={out}",
                      script=recipe / "train.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["sparsity"] == 0.5
    ckpt = next((out / "save").glob("CKPT*"))
    state = torch.load(ckpt / "ssl.ckpt", map_location="cpu")
    weights = [v for k, v in state.items() if k.endswith(".weight") and v.dim() == 2
               and ".encoder.layers." in k and "layer_norm" not in k]
    assert weights
    for w in weights:  # per layer, exactly half zero
        assert abs((w == 0).sum().item() - w.numel() / 2) <= 1, w.shape
