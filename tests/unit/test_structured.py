"""Structured masks, SAFARI prune-and-grow, baselines and physical shrinking."""

import subprocess
import sys

import pytest
import torch
from test_masks import SMALL, audio, train_scores
from transformers import Data2VecAudioConfig, HubertConfig, Wav2Vec2Config

from s3brain.strategies.pruning import structured as S

HEADS4 = {**SMALL, "num_attention_heads": 4}


def model4(config_class=Wav2Vec2Config, seed=0):
    torch.manual_seed(seed)
    from transformers import AutoModel
    return AutoModel.from_config(config_class(**HEADS4)).eval()


def pruned_rows(model):
    """Effective FFN rows and head rows that must be exactly zero."""
    masks = S.unit_masks(model)
    for b, layer in enumerate(model.encoder.layers):
        ffn = masks[f"{b}.ffn"].keep
        yield layer.feed_forward.intermediate_dense.weight[~ffn]
        yield layer.feed_forward.intermediate_dense.bias[~ffn]
        heads = masks[f"{b}.heads"].keep.repeat_interleave(8)
        for proj in (layer.attention.q_proj, layer.attention.k_proj, layer.attention.v_proj):
            yield proj.weight[~heads]
            yield proj.bias[~heads]


@pytest.mark.parametrize("sparsity", [0.2, 0.3, 0.5])
def test_sparsity_is_exact_per_unit_type(sparsity):
    model = model4()
    schedule = S.Safari(sparsity)
    schedule.setup(model)
    sp_ffn, sp_heads = S.split_sparsity(sparsity)
    assert (sp_ffn + sp_heads) / 2 == pytest.approx(sparsity)
    assert sp_heads - sp_ffn == pytest.approx(0.2)
    for name, units in S.unit_masks(model).items():
        target = sp_ffn if units.kind == "ffn" else sp_heads
        assert int((~units.keep).sum()) == round(target * units.keep.numel()), name


def test_pruned_units_stay_zero_and_frozen_through_training():
    model = model4()
    S.StructuredOneShot(0.4).setup(model)
    originals = {n: p.detach().clone() for n, p in model.named_parameters() if "original" in n}
    out_before = model.encoder.layers[0].feed_forward.output_dense.weight.detach().clone()
    for p in model.parameters():
        p.requires_grad_(True)
    train_scores(model, steps=3, lr=0.01)
    assert all(torch.count_nonzero(rows) == 0 for rows in pruned_rows(model))
    # A pruned neuron's output is exactly zero, so its outgoing weights get no gradient either.
    out = model.encoder.layers[0].feed_forward.output_dense.weight.detach()
    keep0 = S.unit_masks(model)["0.ffn"].keep
    assert torch.equal(out[:, ~keep0], out_before[:, ~keep0])
    assert not torch.equal(out[:, keep0], out_before[:, keep0])
    # Kept units trained, pruned units' stored weights untouched (no gradient reached them).
    layer = model.encoder.layers[0].feed_forward.intermediate_dense
    keep = S.unit_masks(model)["0.ffn"].keep
    now = layer.parametrizations.weight.original.detach()
    before = originals["encoder.layers.0.feed_forward.intermediate_dense.parametrizations.weight.original"]
    assert torch.equal(now[~keep], before[~keep]) and not torch.equal(now[keep], before[keep])


def test_prune_and_grow_keeps_sparsity_and_moves_units():
    model = model4()
    safari = S.Safari(0.3, adjust_every=2, fix_after=6)
    safari.setup(model)
    before = {k: u.keep.clone() for k, u in S.unit_masks(model).items()}
    for p in model.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    for step in range(1, 9):
        loss = model(audio(seed=step)).last_hidden_state.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        safari.on_step(model, step)
    after = S.unit_masks(model)
    for name, units in after.items():
        assert int(units.keep.sum()) == int(before[name].sum()), name
    moved = sum(int((after[k].keep != before[k]).sum()) for k in before)
    total = sum(u.keep.numel() for u in after.values())
    assert moved > 0 and safari.moved >= moved
    print(f"share of units that moved: {moved / total:.1%}")
    assert all(torch.count_nonzero(rows) == 0 for rows in pruned_rows(model))
    # After fix_after the mask no longer changes.
    frozen = {k: u.keep.clone() for k, u in after.items()}
    safari.on_step(model, 10)
    assert all(torch.equal(frozen[k], u.keep) for k, u in S.unit_masks(model).items())


def test_structured_parp_adjusts_then_reprunes():
    model = model4()
    parp = S.StructuredPARP(0.4, interval_steps=3)
    parp.setup(model)
    assert not S.unit_masks(model)  # no masks: the zeros live in the weights

    def zero_rows():
        w = model.encoder.layers[0].feed_forward.intermediate_dense.weight
        return int((w.abs().sum(1) == 0).sum())

    assert zero_rows() == round(S.split_sparsity(0.4)[0] * 64)
    for p in model.parameters():
        p.requires_grad_(True)
    train_scores(model, steps=2, lr=0.01)
    assert zero_rows() == 0  # zeroed units were updated
    parp.on_step(model, 3)
    assert zero_rows() == round(S.split_sparsity(0.4)[0] * 64)


@pytest.mark.parametrize("config_class", [Wav2Vec2Config, HubertConfig, Data2VecAudioConfig])
def test_shrunk_model_equals_masked_and_loads_with_transformers_alone(config_class, tmp_path):
    model = model4(config_class)
    safari = S.Safari(0.4)
    safari.setup(model)
    x = audio()
    with torch.no_grad():
        masked = model(x).last_hidden_state
        S.shrink(model)
        shrunk = model(x).last_hidden_state
    assert torch.allclose(masked, shrunk, atol=1e-5)
    sizes = model.config.layer_intermediate_sizes
    assert sizes == [64 - round(0.3 * 64)] * 3 and model.config.layer_attention_heads == [2] * 3
    dense = sum(p.numel() for p in model4(config_class).encoder.parameters())
    assert sum(p.numel() for p in model.encoder.parameters()) < dense
    S.save_shrunk(model, tmp_path / "shrunk")
    torch.save(x, tmp_path / "x.pt")
    torch.save(masked, tmp_path / "y.pt")
    code = (
        "import sys, torch\n"
        "from transformers import AutoModel\n"
        f"m = AutoModel.from_pretrained({str(tmp_path / 'shrunk')!r}, trust_remote_code=True).eval()\n"
        "assert not any(k.startswith('s3brain') for k in sys.modules), 's3brain imported'\n"
        f"x, y = torch.load({str(tmp_path / 'x.pt')!r}), torch.load({str(tmp_path / 'y.pt')!r})\n"
        "with torch.no_grad(): out = m(x).last_hidden_state\n"
        "print(type(m).__name__, torch.allclose(out, y, atol=1e-5))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [f"Shrunk{type(model).__name__}", "True"]
