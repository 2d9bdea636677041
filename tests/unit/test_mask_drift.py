"""``studies/mask_drift/mask_drift.py``: how far S3-Router's trained masks moved from their
initial ones, on run folders written here from a tiny random wav2vec2 (``save_pretrained``) with
masks whose changes are known."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from s3brain.strategies.s3router.mask_bank import save_mask
from s3brain.strategies.s3router.masks import add_masks, masked_linears

REPO = Path(__file__).resolve().parents[2]
SPARSITY = 0.25


def load():
    spec = importlib.util.spec_from_file_location(
        "mask_drift", REPO / "studies" / "mask_drift" / "mask_drift.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mask_drift"] = module
    spec.loader.exec_module(module)
    return module


drift = load()


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
                            conv_kernel=(10, 3), num_feat_extract_layers=2)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("backbone")
    Wav2Vec2Model(config).save_pretrained(folder)
    return folder


def run(folder, backbone, init, seed, swaps=0):
    """A finished S3-Router run: masks initialised as the recipe does, then, in the first masked
    layer, ``swaps`` removed weights brought back and as many kept ones removed."""
    model = Wav2Vec2Model.from_pretrained(backbone)
    add_masks(model, sparsity=SPARSITY, init=init, scope="ffn", seed=seed)
    first = next(iter(masked_linears(model).values())).parametrizations.weight[0]
    with torch.no_grad():
        scores = first.scores.view(-1)
        kept = first.mask().view(-1).bool()
        back, out = (~kept).nonzero()[:swaps, 0], kept.nonzero()[:swaps, 0]
        high, low = scores.max() + 1, scores.min() - 1
        scores[back], scores[out] = high, low
    folder.mkdir(parents=True)
    save_mask(folder / "task_mask.safetensors", model, strategy="s3router", sparsity=SPARSITY,
              init=init, scope="ffn", blocks=None)
    (folder / "hyperparams.yaml").write_text(f"seed: {seed}\nlr_ssl: 5e-5   # scores\n")
    return len(masked_linears(model)), first.scores.numel()


def test_an_untouched_mask_has_not_moved_and_wmi_removes_the_smallest(tmp_path, backbone):
    for init in ("ori", "ri", "wmi"):
        run(tmp_path / init, backbone, init, seed=3)
        result = drift.drift(tmp_path / init, str(backbone))
        assert result["moved"] == 0.0 and result["score_lr"] == "5e-5" and result["seed"] == 3
        if init != "ri":  # ORI's and WMI's initial masks are the magnitude masks
            assert result["removed_small"] == 1.0
    # a random mask removes small weights at about the chance rate, the sparsity
    assert drift.drift(tmp_path / "ri", str(backbone))["removed_small"] < 0.5


def test_swapped_weights_are_counted_per_layer_and_pooled_over_seeds(tmp_path, backbone):
    layers, numel = run(tmp_path / "a" / "s3router_ri_0.25", backbone, "ri", seed=1, swaps=8)
    run(tmp_path / "b" / "s3router_ri_0.25", backbone, "ri", seed=2, swaps=4)
    removed = numel - round((1 - SPARSITY) * numel)
    one = drift.drift(tmp_path / "a" / "s3router_ri_0.25", str(backbone))
    assert one["moved"] == pytest.approx(8 / removed / layers)  # one layer of `layers` moved
    rows = drift.main([str(tmp_path), "--backbone", str(backbone), "--out", str(tmp_path)])
    assert len(rows) == 1 and rows[0]["seeds"] == 2
    assert torch.is_grad_enabled()  # the worker's later tests train: nothing switched off
    assert rows[0]["moved"] == pytest.approx((8 + 4) / 2 / removed / layers)
    assert "s3router_ri_0.25 | ri | 5e-5" in (tmp_path / "mask_drift.md").read_text()


def test_masks_of_another_backbone_are_refused(tmp_path, backbone):
    run(tmp_path / "run", backbone, "ori", seed=0)
    other = tmp_path / "other"
    model = Wav2Vec2Model.from_pretrained(backbone)
    with torch.no_grad():
        model.encoder.layers[0].feed_forward.intermediate_dense.weight.add_(1.0)
    model.save_pretrained(other)
    with pytest.raises(SystemExit, match="another backbone"):
        drift.drift(tmp_path / "run", str(other))


def test_each_run_is_rebuilt_on_the_backbone_its_results_record(tmp_path, backbone):
    layers, numel = run(tmp_path / "run", backbone, "ori", seed=0, swaps=2)
    (tmp_path / "run" / "results.json").write_text(json.dumps({"ssl_hub": str(backbone)}))
    rows = drift.main([str(tmp_path / "run"), "--out", str(tmp_path)])
    removed = numel - round((1 - SPARSITY) * numel)
    assert rows[0]["moved"] == pytest.approx(2 / removed / layers)
    # without the record the default backbone is tried, and it is not the run's: refused
    (tmp_path / "run" / "results.json").unlink()
    with pytest.raises(SystemExit, match="another backbone"):
        drift.main([str(tmp_path / "run"), "--out", str(tmp_path)])
