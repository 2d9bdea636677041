"""Audio as it comes: containers, sample rates and channel counts the project did not write, read
into what the backbone expects (a recipe run on 8 kHz audio:
``tests/integration/test_real_audio_recipe.py``)."""

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from s3brain.backbone import audio
from s3brain.backbone.audio import AudioReadError, backbone_rate, read_audio
from s3brain.backbone.wrapper import default_backbone

RATES = [8000, 22050, 44100, 48000]
CONTAINERS = {"wav": {"subtype": "PCM_16"}, "flac": {"subtype": "PCM_16"}, "mp3": {}}


def _two_tones(rate, seconds=1.0):
    """Left channel 440 Hz, right channel 1000 Hz: a stereo signal whose mono mix has both."""
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 1000 * t)], 1)


def _peaks(signal, rate, count=2):
    """The ``count`` strongest frequencies (Hz) of ``signal``, strongest first."""
    spectrum = np.abs(np.fft.rfft(signal.numpy() * np.hanning(len(signal))))
    freqs = np.fft.rfftfreq(len(signal), 1 / rate)
    order = np.argsort(spectrum)[::-1]
    found = []
    for i in order:  # skip the neighbours of a peak already found
        if all(abs(freqs[i] - f) > 20 for f in found):
            found.append(freqs[i])
        if len(found) == count:
            return found
    return found


@pytest.mark.parametrize("container", sorted(CONTAINERS))
@pytest.mark.parametrize("rate", RATES)
def test_stereo_file_at_any_rate_reads_as_mono_16k(tmp_path, container, rate):
    path = tmp_path / f"two_tones.{container}"
    sf.write(path, _two_tones(rate), rate, **CONTAINERS[container])
    sig = read_audio(path, 16000)

    # Against a reference built apart: the decoded channels averaged, torchaudio's functional
    # resample (not the cached transform read_audio uses).
    decoded, file_rate = sf.read(path, dtype="float32", always_2d=True)
    assert file_rate == rate and decoded.shape[1] == 2
    reference = torchaudio.functional.resample(torch.from_numpy(decoded.mean(1)), rate, 16000)
    assert sig.dtype == torch.float32 and sig.dim() == 1
    assert sig.shape == reference.shape
    assert torch.allclose(sig, reference, atol=1e-5)
    # Duration kept, and the content is at the right pitch: both tones where they belong.
    assert abs(len(sig) / 16000 - len(decoded) / rate) < 1e-3
    assert sorted(round(f / 10) * 10 for f in _peaks(sig, 16000)) == [440, 1000]


def test_segment_is_cut_in_the_files_samples_then_resampled(tmp_path):
    rate = 8000
    mono = _two_tones(rate, seconds=2.0)[:, 0]
    path = tmp_path / "segment.wav"
    sf.write(path, mono, rate, subtype="FLOAT")
    sig = read_audio({"file": str(path), "start": 4000, "stop": 12000}, 16000)
    reference = torchaudio.functional.resample(torch.from_numpy(mono[4000:12000]).float(), rate,
                                               16000)
    assert sig.shape == (16000,)
    assert torch.allclose(sig, reference, atol=1e-5)


def test_backbone_rate_from_the_feature_extractor_config(tmp_path):
    assert backbone_rate(default_backbone()) == 16000
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 8000}))
    assert backbone_rate(folder) == 8000
    assert backbone_rate(tmp_path) == 16000  # no config: the default


def test_unreadable_and_empty_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"not audio at all")
    with pytest.raises(AudioReadError, match="broken.flac"):
        read_audio(broken)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0), 16000)
    with pytest.raises(AudioReadError, match="empty.wav"):
        read_audio(empty)


def test_one_info_line_per_distinct_rate(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(audio, "_rates_seen", set())
    for i, rate in enumerate([8000, 8000, 44100, 8000]):
        sf.write(tmp_path / f"{i}.wav", np.zeros(rate // 10), rate)
    with caplog.at_level(logging.INFO, logger="s3brain.backbone.audio"):
        for i in range(4):
            read_audio(tmp_path / f"{i}.wav")
    lines = [r.getMessage() for r in caplog.records if r.name == "s3brain.backbone.audio"]
    assert len(lines) == 2
    assert "8000 Hz resampled to 16000 Hz" in lines[0] and "44100 Hz" in lines[1]
