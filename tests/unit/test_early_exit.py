"""Early exit really stops computing; thresholds at the extremes; exact last-layer output."""

import pytest
import torch
from test_masks import SMALL, audio
from transformers import AutoModel, Data2VecAudioConfig, HubertConfig, Wav2Vec2Config

from s3brain.strategies.early_exit import ExitHeads, early_exit, layer_outputs, mean_entropy


def model_of(config_class=Wav2Vec2Config, **extra):
    torch.manual_seed(0)
    return AutoModel.from_config(config_class(**{**SMALL, **extra})).eval()


def count_blocks(model):
    calls = []
    for layer in model.encoder.layers:
        layer.register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize("config_class", [Wav2Vec2Config, HubertConfig, Data2VecAudioConfig])
@pytest.mark.parametrize("stable", [False, True])
def test_last_block_output_equals_the_model_output(config_class, stable):
    model = model_of(config_class, do_stable_layer_norm=stable, feat_extract_norm=(
        "layer" if stable else "group"))
    x = audio(batch=1)
    with torch.no_grad():
        outputs = [after for _, after in layer_outputs(model, x)]
        reference = model(x).last_hidden_state
    assert len(outputs) == 3
    assert torch.allclose(outputs[-1], reference, atol=1e-5)


@pytest.mark.parametrize("criterion,low,high", [("entropy", float("inf"), 0.0),
                                                ("similarity", -1.01, 1.01)])
def test_extreme_thresholds_give_first_and_last_block_and_blocks_really_stop(criterion, low,
                                                                             high):
    model = model_of()
    heads = ExitHeads(32, 7, 3)
    calls = count_blocks(model)
    log_probs, layer = early_exit(model, heads, audio(batch=1), criterion, low)
    assert layer == 1 and len(calls) == 1  # blocks 2 and 3 never ran
    assert log_probs.shape[-1] == 7
    calls.clear()
    _, layer = early_exit(model, heads, audio(batch=1), criterion, high)
    assert layer == 3 and len(calls) == 3


def test_entropy_exit_follows_the_heads_confidence():
    model = model_of()
    heads = ExitHeads(32, 7, 3)
    with torch.no_grad():
        for head in heads:
            head.weight.zero_()
            head.bias.zero_()  # uniform output: entropy log(7)
        heads[1].bias[3] = 20.0  # block 2's head is sure of label 3
    x = audio(batch=1)
    log_probs, layer = early_exit(model, heads, x, "entropy", threshold=0.1)
    assert layer == 2 and (log_probs.argmax(-1) == 3).all()
    uniform = torch.full((1, 4, 7), 1 / 7).log()
    assert mean_entropy(uniform) == pytest.approx(torch.log(torch.tensor(7.0)).item())
    # min_layer holds the exit back
    _, layer = early_exit(model, heads, x, "entropy", threshold=10.0, min_layer=3)
    assert layer == 3


def test_unknown_criterion_is_an_error():
    with pytest.raises(ValueError, match="criterion"):
        early_exit(model_of(), ExitHeads(32, 7, 3), audio(batch=1), "confidence", 0.5)


def test_flops_at_exit_removes_exactly_the_blocks_not_run():
    from s3brain.strategies.early_exit import block_flops, flops_at_exit
    from s3brain.utils.efficiency import count_flops

    model = model_of()
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(10 * 16000)))
    hidden = torch.zeros(1, frames, 32)

    def blocks(n):
        out = hidden
        for layer in model.encoder.layers[:n]:
            out = layer(out)
            out = out[0] if isinstance(out, tuple) else out
        return out

    one, three = count_flops(lambda: blocks(1)), count_flops(lambda: blocks(3))
    assert block_flops(model) == one > 0
    assert three == 3 * one
    total = 10 * three  # any all-block figure
    assert flops_at_exit(model, total, 3) == total
    assert flops_at_exit(model, total, 1) == total - 2 * one
    assert flops_at_exit(model, total, 2.5) == int(total - 0.5 * one)
