"""Adapters and LoRA through SpeechBrain's ``AdaptedModel`` on every backbone family and layout:
unchanged at initialisation, only the added tensors train, LoRA merges into plain linears,
a checkpoint resumes (the LoRA recipe run: ``tests/integration/test_lora_recipe.py``)."""

import pytest
import torch
from conftest import FAMILY_LAYOUTS
from transformers import AutoModel

from s3brain.backbone.wrapper import load_ssl
from s3brain.strategies.adapters import Adapters as AdapterStrategy
from s3brain.strategies.adapters import (
    HoulsbyAdapter,
    LoRAAdapters,
    adapter_state_dict,
    added_adapters,
    merge_lora,
    target_layers,
)
from s3brain.strategies.adapters import HoulsbyAdapters as Adapters
from s3brain.strategies.adapters import LoRA as LoRAStrategy
from s3brain.strategies.adapters import LoRALinear as LoRA
from s3brain.strategies.base import deployable, setup_strategies, task_payload
from s3brain.utils.checkpoint import Checkpointer

IDS = [f"{family}-{layout}" for family, layout in FAMILY_LAYOUTS]


@pytest.fixture(params=FAMILY_LAYOUTS, ids=IDS)
def folder(request, tiny_family_models):
    return tiny_family_models[request.param]


def _model(folder):
    return AutoModel.from_pretrained(folder, local_files_only=True).eval()


def _wav(batch=2, samples=8000, seed=0):
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def _sizes(model):
    config = model.config
    return config.hidden_size, config.intermediate_size, config.num_hidden_layers


def _lora_count(model, rank, attention=True, ffn=True):
    """rank * (in + out) per adapted linear."""
    hidden, inner, blocks = _sizes(model)
    per_block = (4 * rank * 2 * hidden if attention else 0) + (
        2 * rank * (hidden + inner) if ffn else 0)
    return blocks * per_block


def _perturb(added, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in added.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


def _backbone_tensors(model):
    """The pretrained tensors, by their names with the wrappers' parts taken out."""
    return {k.replace(".pretrained_module", "").replace(".pretrained_linear", ""): v.clone()
            for k, v in model.state_dict().items() if ".adapter_" not in k}


@pytest.mark.parametrize("targets", [["attention", "ffn"], ["ffn"], ["q_proj", "out_proj"]])
def test_lora_unchanged_at_init_counted_frozen_and_merged(folder, targets):
    model = _model(folder)
    wav = _wav()
    rank = 3
    with torch.no_grad():
        plain = model(wav).last_hidden_state
    keys = set(model.state_dict())
    lora = LoRAAdapters(model, rank=rank, alpha=6.0, targets=targets)
    with torch.no_grad():
        at_init = model(wav).last_hidden_state
    assert (at_init - plain).abs().max() <= 1e-6
    hidden, _, blocks = _sizes(model)
    if targets == ["q_proj", "out_proj"]:
        expected = blocks * 2 * rank * 2 * hidden
    else:
        expected = _lora_count(model, rank, attention="attention" in targets)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == expected == sum(p.numel() for p in lora.parameters())
    assert {id(p) for p in trainable} == {id(p) for p in lora.parameters()}
    assert all(isinstance(m, LoRA) for m in added_adapters(model).values())

    _perturb(lora)
    with torch.no_grad():
        adapted = model(wav).last_hidden_state
        assert (adapted - plain).abs().max() > 1e-3  # the update does reach the output
        merged = merge_lora(model)
        assert (merged(wav).last_hidden_state - adapted).abs().max() <= 1e-5
    assert not any(isinstance(m, (LoRA, HoulsbyAdapter)) for m in merged.modules())
    assert all(type(merged.get_submodule(name)) is torch.nn.Linear for name in
               [n for n, _ in merged.named_modules() if n.endswith(("_proj", "_dense"))])
    assert set(merged.state_dict()) == keys  # the plain backbone's keys again


def test_houlsby_unchanged_at_init_counted_and_frozen(folder):
    model = _model(folder)
    wav = _wav()
    # frozen as the adapters leave it: WavLM's attention (torch's multi_head_attention_forward)
    # takes another kernel when no weight requires grad, equal to the last bits only on some CPUs
    model.requires_grad_(False)
    with torch.no_grad():
        plain = model(wav).last_hidden_state
    pretrained = _backbone_tensors(model)
    adapters = Adapters(model, bottleneck=5, targets=["ffn"])
    with torch.no_grad():
        assert torch.equal(model(wav).last_hidden_state, plain)
    hidden, inner, blocks = _sizes(model)
    # down (out -> 5) and up (5 -> out), with biases, after each FFN linear
    expected = blocks * sum(2 * 5 * out + 5 + out for out in (inner, hidden))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert sum(p.numel() for p in adapters.parameters()) == expected
    # a few steps move the output; the pretrained tensors stay bit-identical
    optimizer = torch.optim.Adam(adapters.parameters(), lr=0.01)
    model.train()
    for step in range(2):
        loss = model(_wav(seed=step + 1)).last_hidden_state.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(wav).last_hidden_state, plain)
    after = _backbone_tensors(model)
    assert after.keys() == pretrained.keys()
    assert all(torch.equal(after[k], v) for k, v in pretrained.items())


def test_houlsby_on_the_attention_output_or_refused_where_it_cannot_run(folder):
    model = _model(folder)
    if model.config.model_type == "wavlm":  # its attention reads out_proj.weight directly
        with pytest.raises(ValueError, match="would never run.*use LoRA"):
            Adapters(model, bottleneck=4, targets=["out_proj", "output_dense"])
    else:
        adapters = Adapters(model, bottleneck=4, targets=["out_proj", "output_dense"])
        assert len(adapters) == 2 * model.config.num_hidden_layers


def test_targets_are_checked_and_adapters_go_in_once():
    model = _wav2vec2()
    with pytest.raises(ValueError, match="not a layer of the wav2vec2 table"):
        target_layers(model, ["fc1"])
    assert target_layers(model, "v_proj") == ["encoder.layers.*.attention.v_proj"]
    LoRAAdapters(model, rank=2)
    with pytest.raises(ValueError, match="already has adapters"):
        Adapters(model)


def _wav2vec2():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    return Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64)).eval()


def test_strategies_payload_and_deployable(folder):
    head = torch.nn.Linear(32, 5)
    head_bytes = 4 * (32 * 5 + 5)
    for strategy, merges in ((LoRAStrategy(rank=2), True), (AdapterStrategy(bottleneck=4), False)):
        model = _model(folder)
        setup_strategies([strategy], model, {})
        assert strategy.modules() == {}  # inside the backbone: trained and saved with it
        added = sum(t.numel() for t in adapter_state_dict(model).values())
        assert added == sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert task_payload([strategy], None, model, head, {}) == 4 * added + head_bytes
        _perturb(_trainable(model))
        with torch.no_grad():
            adapted = model(_wav()).last_hidden_state
            deployed = deployable([strategy], model)
            assert (deployed(_wav()).last_hidden_state - adapted).abs().max() <= 1e-5
        assert bool(added_adapters(deployed)) != merges


def _trainable(model):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.nn.ParameterList(params)


@pytest.mark.parametrize("make", [lambda: LoRAStrategy(rank=2, targets=["attention", "ffn"]),
                                  lambda: AdapterStrategy(bottleneck=3)], ids=["lora", "houlsby"])
def test_a_checkpoint_resumes_into_a_fresh_backbone(folder, tmp_path, make):
    """The adapted backbone is the recipe's ``ssl`` recoverable: saved with its added tensors,
    loaded (strictly) into a fresh backbone that the strategy set up the same way."""
    wav = _wav()

    def build():
        ssl = load_ssl(folder, tmp_path / "ssl", freeze_feature_extractor=True).eval()
        setup_strategies([make()], ssl, {})
        return ssl

    ssl = build()
    _perturb(_trainable(ssl))
    with torch.no_grad():
        trained = ssl(wav)
    Checkpointer(tmp_path / "save", recoverables={"ssl": ssl}).save_checkpoint()
    fresh = build()
    with torch.no_grad():
        assert not torch.allclose(fresh(wav), trained)
    assert Checkpointer(tmp_path / "save", recoverables={"ssl": fresh}).recover_if_possible()
    with torch.no_grad():
        assert torch.equal(fresh(wav), trained)
