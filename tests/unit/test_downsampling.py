"""Input downsampling: output lengths, CTC frames, upsampling."""

import pytest
import torch

from s3brain.backbone.wrapper import default_backbone, feature_frames
from s3brain.strategies.downsampling import InputDownsampling
from s3brain.training.ctc import ctc_frames_needed


@pytest.mark.parametrize("kind", ["signal", "conv", "pool"])
@pytest.mark.parametrize("factor", [2, 3])
def test_downsampled_lengths_are_predicted_exactly(kind, factor):
    down = InputDownsampling(kind, factor)
    for n in (400, 16000, 16001, 23457):
        out = down(torch.randn(2, n))
        assert out.shape == (2, down.samples(n))
        assert abs(out.shape[1] - n / factor) <= factor + down.kernel_size


@pytest.mark.parametrize("upsample", [False, True])
def test_ctc_frames_of_the_downsampled_model(upsample):
    from transformers import AutoModel
    model = AutoModel.from_pretrained(default_backbone()).eval()
    down = InputDownsampling("pool", 3, upsample=upsample)
    n = 3 * 16000
    with torch.no_grad():
        frames = down.upsample(model(down(torch.randn(1, n))).last_hidden_state).shape[1]
    assert frames == down.frames(model, n)
    full = feature_frames(model, n)
    assert abs(frames - (full if upsample else full / 3)) <= 3
    # 3 s of fast speech, 55 characters: too few frames at factor 3, enough once upsampled.
    needed = ctc_frames_needed(list("THE SMALL DOG RAN ACROSS THE GREEN FIELD EARLY THIS DAY"))
    assert (frames >= needed) == upsample
