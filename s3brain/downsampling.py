"""Input downsampling before the SSL backbone (the comparative study's cheapest strategy), built
on ``speechbrain.lobes.downsampling``: signal resampling, a learned strided convolution or
average pooling of the waveform by ``factor`` (2 or 3), so that the CNN and the transformer see
``factor`` times fewer frames. With ``upsample`` the output frames are repeated ``factor`` times,
which keeps enough frames for character CTC at factor 3.

Example
-------
>>> import torch
>>> down = InputDownsampling("pool", factor=3, upsample=True)
>>> down(torch.randn(2, 16000)).shape[1] == down.samples(16000)
True
>>> down.upsample(torch.zeros(2, 5, 8)).shape
torch.Size([2, 15, 8])
"""

import math

import torch
from speechbrain.lobes.downsampling import (Conv1DDownsampler, PoolingDownsampler,
                                            SignalDownsampler)
from torch import nn

KINDS = ("signal", "conv", "pool")


class InputDownsampling(nn.Module):
    """Downsample the waveform by ``factor`` with one of SpeechBrain's downsamplers.

    Arguments
    ---------
    kind : str
        ``signal`` (resampling to ``sample_rate / factor``), ``conv`` (a learned strided
        convolution) or ``pool`` (average pooling).
    factor : int
        The downsampling factor.
    sample_rate : int
        Rate of the input waveform in Hz (for ``signal``).
    kernel_size : int, optional
        Kernel of ``conv`` and ``pool``; ``2 * factor + 1`` by default.
    upsample : bool
        Whether ``upsample`` repeats each output frame ``factor`` times, so that the CTC
        output keeps the full frame rate.

    Example
    -------
    >>> down = InputDownsampling("pool", factor=2)
    >>> down(torch.randn(3, 16000)).shape[1] == down.samples(16000)
    True
    """

    def __init__(self, kind, factor, sample_rate=16000, kernel_size=None, upsample=False):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"downsampling kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.factor, self.sample_rate = kind, int(factor), sample_rate
        self.kernel_size = kernel_size or (2 * self.factor + 1)
        self.do_upsample = bool(upsample)
        if kind == "signal":
            self.downsampler = SignalDownsampler(self.factor, sample_rate)
        elif kind == "conv":
            self.downsampler = Conv1DDownsampler(self.factor, self.kernel_size)
        else:
            self.downsampler = PoolingDownsampler(self.factor, self.kernel_size)

    def forward(self, wav):
        """Downsample a waveform batch.

        Arguments
        ---------
        wav : torch.Tensor
            Waveforms, ``[batch, samples]``.

        Returns
        -------
        downsampled : torch.Tensor
            ``[batch, samples']`` with about ``samples / factor`` samples (see ``samples``).
        """
        if self.kind == "pool":  # as [batch, time, channel]: a 2-D input would pool as unbatched
            return self.downsampler(wav.unsqueeze(-1)).squeeze(-1)
        return self.downsampler(wav)

    def samples(self, n):
        """Length of the downsampled signal for ``n`` input samples."""
        if self.kind == "signal":
            return math.ceil(n * int(self.sample_rate / self.factor) / self.sample_rate)
        return (n - self.kernel_size) // self.factor + 1

    def upsample(self, features):
        """Repeat each frame ``factor`` times if ``upsample`` is on, else return as is."""
        if not self.do_upsample:
            return features
        return torch.repeat_interleave(features, self.factor, dim=1)

    def frames(self, hf_model, n):
        """CTC frames the model gives for ``n`` input samples (after any upsampling)."""
        frames = int(hf_model._get_feat_extract_output_lengths(torch.as_tensor(self.samples(n))))
        return frames * (self.factor if self.do_upsample else 1)
