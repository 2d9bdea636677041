"""FLOPs (attention included, against an analytic count), peak memory and ONNX timing of the
cost report, on known answers."""

from pathlib import Path

import pytest
import torch

from s3brain.utils.efficiency import onnx_latency_ms, peak_memory_mb


def test_peak_memory_counts_live_tensors_only():
    def forward():
        a = torch.zeros(1024, 1024)  # 4 MiB
        b = torch.zeros(1024, 1024)  # 4 MiB
        del a
        c = torch.zeros(2048, 1024)  # 8 MiB: at most b and c are alive together
        return b, c

    assert peak_memory_mb(forward) == pytest.approx(12.0, abs=0.1)


def test_onnx_export_matches_torch_and_times_it():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(1, 8, 10, stride=5)
    linear = torch.nn.Linear(8, 3)

    def forward(wav):
        return linear(conv(wav.unsqueeze(1)).transpose(1, 2))

    ms, difference = onnx_latency_ms(forward, [conv, linear], torch.randn(1, 16000), repeats=3)
    assert ms > 0 and difference < 1e-5


TINY = Path(__file__).resolve().parents[2] / "s3brain" / "backbones" / "w2v2-tiny"


def analytic_wav2vec2_flops(config, samples):
    """FLOPs of a wav2vec2 forward on ``samples`` samples, from the config alone (no flop
    counter): what the counter counts, i.e. convolutions, linear layers and the two attention
    products; normalisations, activations and softmax are not counted, nor biases."""
    flops, length, channels = 0, samples, 1
    for out_channels, kernel, stride in zip(config.conv_dim, config.conv_kernel,
                                            config.conv_stride):
        length = (length - kernel) // stride + 1
        flops += 2 * length * out_channels * channels * kernel
        channels = out_channels
    frames, hidden = length, config.hidden_size
    flops += 2 * frames * channels * hidden  # feature projection
    # Positional convolution: padding k // 2 gives frames + 1 outputs for an even kernel (the
    # last one is cut off after the convolution, so it is computed and counted).
    kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    pos_frames = frames + 2 * (kernel // 2) - kernel + 1
    flops += 2 * pos_frames * hidden * (hidden // groups) * kernel
    per_layer = (4 * 2 * frames * hidden * hidden  # q, k, v and out projections
                 + 2 * 2 * frames * hidden * config.intermediate_size  # FFN in and out
                 + 2 * 2 * frames * frames * hidden)  # Q K^T and A V over all heads
    return frames, flops + config.num_hidden_layers * per_layer


def test_flops_count_attention_and_match_an_analytic_count():
    """The embedded w2v2-tiny on 10 s: the counter (default SDPA attention) equals a count from
    the config, and the same model with eager attention (plain matmuls) counts the same."""
    from transformers import AutoModel

    from s3brain.utils.efficiency import attention_products_flops, count_flops

    wav = torch.randn(1, 160000, generator=torch.Generator().manual_seed(0)) * 0.1
    sdpa = AutoModel.from_pretrained(TINY, attn_implementation="sdpa").eval()
    eager = AutoModel.from_pretrained(TINY, attn_implementation="eager").eval()
    frames, expected = analytic_wav2vec2_flops(sdpa.config, wav.shape[1])
    assert frames == 499
    counted = count_flops(sdpa, wav)
    assert counted == expected
    assert count_flops(eager, wav) == counted
    # What was missing: the attention products of the 4 blocks (about 22 % of the total here).
    heads = sdpa.config.num_attention_heads
    head_dim = sdpa.config.hidden_size // heads
    shape = (1, heads, frames, head_dim)
    attention = sdpa.config.num_hidden_layers * attention_products_flops(shape, shape, shape)
    assert 0.2 < attention / counted < 0.25


def test_attention_formula_leaves_torch_registry_alone():
    """The formula is given to our counter only: a plain FlopCounterMode still skips the kernel,
    and a padding mask does not change the count."""
    from torch.utils.flop_counter import FlopCounterMode

    from s3brain.utils.efficiency import count_flops

    q = torch.randn(2, 3, 20, 8)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        sdpa(q, q, q)
    assert plain.get_total_flops() == 0
    mask = torch.ones(2, 1, 20, 20, dtype=torch.bool)
    mask[1, ..., 10:] = False
    assert count_flops(sdpa, q, q, q) == count_flops(lambda: sdpa(q, q, q, attn_mask=mask)) \
        == 2 * 2 * (2 * 3 * 20 * 20 * 8)


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "data2vec-audio", "wavlm"])
def test_every_family_counts_the_same_attention_as_eager(family):
    """HuBERT and data2vec-audio run the same CPU kernel as wav2vec2, padding mask or not, and
    what the formula adds is exactly their attention products; WavLM has its own attention (with
    relative position bias) in plain matmuls, which torch's counter sees already."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoConfig, AutoModel

    from s3brain.utils.efficiency import attention_products_flops, count_flops

    config = AutoConfig.for_model(family, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  conv_dim=(16,) * 7, num_conv_pos_embedding_groups=4)
    wav = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 16000, dtype=torch.long)
    mask[1, 8000:] = 0
    counts, plain = {}, {}
    # transformers has no SDPA path for WavLM (it refuses the setting)
    for implementation in ("eager",) if family == "wavlm" else ("sdpa", "eager"):
        config._attn_implementation = implementation
        model = AutoModel.from_config(config).eval()
        counts[implementation] = count_flops(lambda: model(wav, attention_mask=mask))
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(wav, attention_mask=mask)
        plain[implementation] = counter.get_total_flops()
    frames = model._get_feat_extract_output_lengths(16000)
    shape = (2, 4, frames, 8)
    default = "eager" if family == "wavlm" else "sdpa"
    assert counts[default] == counts["eager"] == plain["eager"]
    missing = 0 if family == "wavlm" else 2 * attention_products_flops(shape, shape, shape)
    assert counts[default] - plain[default] == missing


def test_attention_backward_counts_as_plain_matmuls():
    """Training cost: the CPU kernel's backward counts what the same attention written with
    matmuls counts (the gradients of both products, twice the forward)."""
    from s3brain.utils.efficiency import flop_counter

    def fused(q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    def written_out(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, -1) @ v

    counts = []
    for attention in (fused, written_out):
        q, k, v = (torch.randn(2, 3, 20, 8, requires_grad=True) for _ in range(3))
        with flop_counter() as counter:
            attention(q, k, v).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == 3 * 2 * (2 * 2 * 3 * 20 * 20 * 8)


@pytest.mark.parametrize("groups, transposed, input_grad", [
    (4, False, True), (1, False, False), (2, True, True)])
def test_convolution_backward_counts_each_gradient_as_the_forward(groups, transposed, input_grad):
    """Each gradient of a convolution (input, weight) multiplies the pairs the forward does: the
    backward counts the forward once per gradient, grouped (torch 2.13's own formula counts
    the weight's gradient ``groups`` times over), strided or transposed alike."""
    from s3brain.utils.efficiency import flop_counter

    kind = torch.nn.ConvTranspose1d if transposed else torch.nn.Conv1d
    conv = kind(32, 16, 6, stride=2, padding=3, groups=groups, bias=False)
    x = torch.randn(2, 32, 50, requires_grad=input_grad)
    with flop_counter() as counter:
        y = conv(x)
        forward = counter.get_total_flops()
        y.sum().backward()
    # a multiply-add per input channel of the group, kernel tap, output channel and position
    positions = (50 if transposed else y.shape[-1]) * 2
    assert forward == 2 * positions * (32 // groups) * 6 * 16
    assert counter.get_total_flops() == forward * (3 if input_grad else 2)


def test_pretraining_step_counts_three_forward_passes():
    """One pretraining step of w2v2-tiny: the backward counts twice the forward (every product
    has both gradients; transformers lets the waveform require grad in training)."""
    from s3brain.training.pretraining import new_pretraining_model, pretraining_step, step_flops
    from s3brain.utils.efficiency import flop_counter

    model = new_pretraining_model(TINY).train()
    with torch.no_grad(), flop_counter() as counter:
        pretraining_step(model, torch.randn(2, 8000), torch.ones(2), 0.5, 5)
    assert counter.get_total_flops() > 0
    assert step_flops(TINY, 2, 0.5) == 3 * counter.get_total_flops()
