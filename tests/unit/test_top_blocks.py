"""Partial fine-tuning (s3brain.strategies.top_blocks): which tensors learn in every family and layout, that
a training step changes only them, and what a task stores."""

import pytest
import torch

from s3brain.backbone.families import transformer_blocks
from s3brain.backbone.tiny_models import tiny_model
from s3brain.strategies.base import task_payload
from s3brain.strategies.top_blocks import TopBlocks

FAMILIES = [(f, layout) for f in ("wav2vec2", "hubert", "wavlm") for layout in ("base", "large")]
FAMILIES.append(("data2vec-audio", "base"))


@pytest.mark.parametrize("family,layout", FAMILIES)
def test_only_the_top_blocks_learn_and_a_step_changes_only_them(family, layout):
    model = tiny_model(family, layout).train()
    strategy = TopBlocks(blocks=1)
    strategy.setup(model, {})
    top = transformer_blocks(model)[-1]
    expected = {id(p) for p in top.parameters()}
    if layout == "large":  # the final layer norm comes after the last block
        expected |= {id(p) for p in model.encoder.layer_norm.parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == expected

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    torch.manual_seed(0)
    model(torch.randn(2, 4000)).last_hidden_state.pow(2).mean().backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".layers.1." in n or n.startswith("encoder.layer_norm")
                           for n in changed), changed


def test_a_task_stores_its_top_blocks_and_head():
    model = tiny_model("wav2vec2", "base")
    strategy = TopBlocks(blocks=2)
    strategy.setup(model, {})
    head = torch.nn.Linear(32, 5)
    blocks = sum(p.numel() * 4 for p in transformer_blocks(model).parameters())
    assert task_payload([strategy], None, model, head, {}) == blocks + (32 * 5 + 5) * 4
    assert blocks < sum(p.numel() * 4 for p in model.parameters())


def test_more_blocks_than_the_backbone_has_is_refused():
    with pytest.raises(ValueError, match="has 2 transformer blocks"):
        TopBlocks(blocks=3).setup(tiny_model("hubert", "base"), {})
    with pytest.raises(ValueError, match="at least the top block"):
        TopBlocks(blocks=0)
