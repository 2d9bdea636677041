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
from speechbrain.lobes.downsampling import Conv1DDownsampler, PoolingDownsampler, SignalDownsampler
from torch import nn

from s3brain.strategies.base import Strategy

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

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return {"kind": self.kind, "factor": self.factor, "sample_rate": self.sample_rate,
                "kernel_size": self.kernel_size, "upsample": self.do_upsample}

    def frames(self, hf_model, n):
        """CTC frames the model gives for ``n`` input samples (after any upsampling)."""
        frames = int(hf_model._get_feat_extract_output_lengths(torch.as_tensor(self.samples(n))))
        return frames * (self.factor if self.do_upsample else 1)


class Downsampling(Strategy):
    """Input downsampling (``s3brain.strategies.downsampling.InputDownsampling``): the waveform shortened
    before the backbone, the output frames optionally repeated back.

    Arguments
    ---------
    downsampler : s3brain.strategies.downsampling.InputDownsampling
        The downsampler (a learned one trains with the head).

    Example
    -------
    >>> from s3brain.strategies.downsampling import InputDownsampling
    >>> strategy = Downsampling(InputDownsampling("pool", factor=2))
    >>> strategy.changes_forward, list(strategy.modules())
    (True, ['downsampler'])
    """

    changes_forward = True

    def __init__(self, downsampler):
        self.downsampler = downsampler

    def modules(self):
        """See ``Strategy.modules``."""
        return {"downsampler": self.downsampler}

    def encode(self, ssl, wavs, wav_lens, stage):
        """See ``Strategy.encode``."""
        return self.downsampler.upsample(ssl(self.downsampler(wavs), wav_lens)), wav_lens

    def output_frames(self, model, samples):
        """See ``Strategy.output_frames``."""
        return self.downsampler.frames(model, samples)

    def deployable(self, ssl):
        """See ``Strategy.deployable``."""
        return DownsampledBackbone(ssl, self.downsampler)

    def export(self, deployment):
        """See ``Strategy.export``: the deployed downsampler before the backbone."""
        return {"encode": DownsampledCTC(self.downsampler)}


class DownsampledBackbone(nn.Module):
    """A backbone behind input downsampling, as deployed: ``forward`` is the lobe's path,
    ``before``/``after`` what an exported model adds around the transformers model.

    Arguments
    ---------
    ssl : torch.nn.Module
        The backbone wrapper.
    downsampler : s3brain.strategies.downsampling.InputDownsampling
        The downsampler.

    Example
    -------
    >>> from s3brain.strategies.downsampling import InputDownsampling
    >>> down = DownsampledBackbone(nn.Identity(), InputDownsampling("pool", factor=2))
    >>> down.before(torch.randn(1, 16000)).shape[1] == down.downsampler.samples(16000)
    True
    """

    def __init__(self, ssl, downsampler):
        super().__init__()
        self.ssl = ssl
        # not a submodule: its parameters are the strategy's module's, counted there
        self._downsampler = (downsampler,)
        for name in ("model", "normalize_wav", "output_norm"):
            if hasattr(ssl, name):
                setattr(self, name, getattr(ssl, name))

    @property
    def downsampler(self):
        """The downsampler."""
        return self._downsampler[0]

    def before(self, wavs):
        """The waveform the backbone sees."""
        return self.downsampler(wavs)

    def after(self, features):
        """The features the head sees (frames repeated back with ``upsample``)."""
        return self.downsampler.upsample(features)

    def forward(self, wavs, wav_lens=None):
        """The head's input features."""
        return self.after(self.ssl(self.before(wavs), wav_lens))


class DownsampledCTC(nn.Module):
    """Input downsampling in an inference folder's CTC model (``Downsampling.export``): the
    waveform shortened before the backbone, the frames repeated back after it if the run did.

    Arguments
    ---------
    downsampler : InputDownsampling
        The run's downsampler.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> encoder = SimpleNamespace(backbone=lambda w, l: w.unsqueeze(-1), log_probs=lambda f: f)
    >>> DownsampledCTC(InputDownsampling("pool", factor=2))(encoder, torch.ones(1, 100)).shape
    torch.Size([1, 48, 1])
    """

    def __init__(self, downsampler):
        super().__init__()
        self.downsampler = downsampler

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return {"downsampler": self.downsampler}

    def forward(self, encoder, wavs, wav_lens=None):
        """CTC log-probabilities of ``encoder`` (its ``backbone`` and ``log_probs``).

        Arguments
        ---------
        encoder : s3brain.deployment.modules.CTCEncoder
            The CTC model this part belongs to.
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor, optional
            Relative lengths.

        Returns
        -------
        torch.Tensor
            ``[batch, frames, outputs]``.
        """
        features = encoder.backbone(self.downsampler(wavs), wav_lens)
        return encoder.log_probs(self.downsampler.upsample(features))
