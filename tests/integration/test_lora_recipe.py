"""The LoRA recipe in debug mode: only LoRA and the head train, deployed merged."""

import json

from conftest import run_recipe

from s3brain.backbone.wrapper import load_ssl


def _lora_count(model, rank):
    """rank * (in + out) per adapted linear: q, k, v, out projections and both FFN linears."""
    hidden, inner, blocks = (model.config.hidden_size, model.config.intermediate_size,
                             model.config.num_hidden_layers)
    return blocks * (4 * rank * 2 * hidden + 2 * rank * (hidden + inner))


def test_lora_recipe_debug_run(tmp_path):
    out = tmp_path / "lora"
    proc = run_recipe("recipes/LibriSpeech/hparams/lora.yaml", "--debug", "--synthetic_size=tiny",
                      "--cost_repeats=1", f"--output_folder={out}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = json.loads((out / "results.json").read_text())
    ssl = load_ssl(results["ssl_hub"], tmp_path / "hub")
    lora = _lora_count(ssl.model, rank=8)
    hidden = ssl.model.config.hidden_size
    head = hidden * 256 + 256 + 256 * 29 + 29
    assert results["strategy"] == "lora"
    assert results["params_trainable"] == lora + head
    assert results["storage_bytes_per_task"] == 4 * (lora + head)
    # deployed merged: the plain backbone and the head, nothing of LoRA
    assert results["params_total"] == sum(p.numel() for p in ssl.parameters()) + head
