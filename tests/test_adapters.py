"""Adapter tuning: only the adapters learn, the backbone stays as it was, hooks come out."""

import torch
from test_masks import audio, small_model

from s3brain.adapters import Adapters


def test_adapters_learn_while_the_backbone_stays_fixed():
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = audio()
    with torch.no_grad():
        reference = model(x).last_hidden_state
    adapters = Adapters(model, bottleneck=4)
    optimizer = torch.optim.Adam(adapters.parameters(), lr=0.01)
    model.train()
    for step in range(3):
        loss = model(audio(seed=step)).last_hidden_state.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        adapted = model(x).last_hidden_state
        assert not torch.allclose(adapted, reference)
        adapters.remove()
        assert torch.equal(model(x).last_hidden_state, reference)
    assert len(adapters) == len(model.encoder.layers)
