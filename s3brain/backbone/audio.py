"""Audio as it comes: any container soundfile reads (wav, flac, mp3, ogg), any sample rate, any
number of channels, turned into what the backbone expects (one channel at the rate of its
feature extractor's config).

Speech SSL models are trained at one rate (16 kHz for every public wav2vec2, HuBERT, WavLM and
data2vec-audio) and silently give worse features at another, so every recipe reads audio through
``read_audio`` here: channels are averaged and the signal is resampled with torchaudio's
band-limited sinc interpolation. The first file at each distinct input rate is logged once.

Example
-------
>>> import tempfile, numpy as np, soundfile as sf, torch
>>> t = np.arange(8000) / 8000
>>> stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1)
>>> with tempfile.TemporaryDirectory() as tmp:
...     sf.write(f"{tmp}/a.flac", stereo, 8000)
...     sig = read_audio(f"{tmp}/a.flac", 16000)
>>> sig.shape, sig.dtype
(torch.Size([16000]), torch.float32)
>>> bool(torch.allclose(sig, resample(torch.from_numpy(stereo[:, 0]).float(), 8000, 16000), atol=1e-4))
True
"""

import json
import logging
import os
import threading
from pathlib import Path

import soundfile as sf
import torch

logger = logging.getLogger(__name__)


DEFAULT_RATE = 16000


_resamplers = {}


_rates_seen = set()


_lock = threading.Lock()


class AudioReadError(RuntimeError):
    """An audio file that cannot be read, or holds no samples."""


def backbone_rate(ssl, default=DEFAULT_RATE):
    """The sample rate the backbone expects: ``sampling_rate`` of its feature-extractor config
    (``preprocessor_config.json``), or ``default`` when it has none.

    ``ssl`` is SpeechBrain's HF wrapper (its ``feature_extractor``), a transformers feature
    extractor, anything with a ``sampling_rate``, or a model folder.
    """
    if isinstance(ssl, (str, os.PathLike)):
        config = Path(ssl) / "preprocessor_config.json"
        rate = json.loads(config.read_text()).get("sampling_rate") if config.exists() else None
        return int(rate) if rate else default
    extractor = getattr(ssl, "module", ssl)
    extractor = getattr(extractor, "feature_extractor", extractor)
    rate = getattr(extractor, "sampling_rate", None)
    return int(rate) if rate else default


def resample(signal, orig_rate, new_rate):
    """Resample a signal with torchaudio's windowed-sinc resampler.

    The resampler of each pair of rates is built once and kept (its kernel is the costly part),
    shared by threads.

    Arguments
    ---------
    signal : torch.Tensor
        Audio with time as the last dimension (any leading dimensions).
    orig_rate : int
        The rate of ``signal`` in Hz.
    new_rate : int
        The wanted rate in Hz.

    Returns
    -------
    resampled : torch.Tensor
        The signal at ``new_rate`` (``signal`` itself when the rates are equal).

    Example
    -------
    >>> resample(torch.zeros(2, 48000), 48000, 16000).shape
    torch.Size([2, 16000])
    """
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate == new_rate:
        return signal
    from torchaudio.transforms import Resample

    key = (orig_rate, new_rate)
    with _lock:
        if key not in _resamplers:
            _resamplers[key] = Resample(orig_rate, new_rate)
        resampler = _resamplers[key]
    return resampler.to(signal.device)(signal)


def to_mono(signal):
    """``[time, channels]`` -> ``[time]``: the mean of the channels (a ``[time]`` input is kept)."""
    return signal.mean(1) if signal.dim() == 2 else signal


def _note_rate(rate, target, path):
    with _lock:
        if rate in _rates_seen:
            return
        _rates_seen.add(rate)
    if rate == target:
        logger.info("Audio at %d Hz (first: %s)", rate, path)
    else:
        logger.info("Audio at %d Hz resampled to %d Hz for the backbone (first: %s)",
                    rate, target, path)


def read_audio(source, sample_rate=DEFAULT_RATE):
    """Read a file as one channel at ``sample_rate`` Hz, as a float32 tensor ``[time]``.

    Arguments
    ---------
    source : str or dict
        A path, or SpeechBrain's ``{"file": path, "start": s, "stop": e}`` with ``start`` and
        ``stop`` in samples of the file's own rate.
    sample_rate : int
        The rate to return (the backbone's, see ``backbone_rate``).

    Returns
    -------
    torch.Tensor
        The mono signal.

    Raises
    ------
    AudioReadError
        The file cannot be decoded or holds no samples (the message names the file).
    """
    if isinstance(source, dict):
        path, start, stop = source["file"], int(source.get("start", 0)), source.get("stop")
        stop = None if stop is None or int(stop) < 0 else int(stop)
    else:
        path, start, stop = source, 0, None
    try:
        data, rate = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as err:  # soundfile's LibsndfileError is a RuntimeError
        raise AudioReadError(f"cannot read audio {path}: {err}") from None
    if data.shape[0] == 0:
        raise AudioReadError(f"audio {path} holds no samples")
    _note_rate(rate, sample_rate, path)
    signal = to_mono(torch.from_numpy(data))
    return resample(signal, rate, sample_rate).contiguous()


def audio_info(path):
    """``(seconds, sample_rate, channels)`` of a file, from its header."""
    info = sf.info(str(path))
    return info.duration, info.samplerate, info.channels
