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


def test_a_deep_copy_of_backbone_and_adapters_runs_the_copied_adapters():
    """The cost report measures a deep copy (moved to the CPU); its hooks must call the copied
    adapters, not the originals (which may sit on a GPU)."""
    import copy

    model = small_model()
    adapters = Adapters(model, bottleneck=4)
    for p in adapters.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = audio()
    with torch.no_grad():
        original = model(x).last_hidden_state
        model_copy, adapters_copy = copy.deepcopy([model, adapters])
        assert torch.equal(model_copy(x).last_hidden_state, original)
        for p in adapters_copy.parameters():
            p.zero_()  # an all-zero adapter adds nothing: the copy now gives the plain backbone
        adapters.remove()
        plain = model(x).last_hidden_state
        assert torch.equal(model_copy(x).last_hidden_state, plain)
        assert not torch.allclose(plain, original)
