"""``python -m s3brain.inference.transcribe`` over a list of files with bad ones among them: each good
file transcribed as ``EncoderASR`` transcribes it, each bad one named on stderr and skipped,
exit status 1."""

import csv

import numpy as np
import soundfile as sf
from conftest import run_python, run_recipe


def test_transcribe_a_list_with_bad_files(tmp_path, tiny_corpus):
    from speechbrain.inference.ASR import EncoderASR

    from s3brain.deployment.export import export_inference

    run = tmp_path / "run"
    proc = run_recipe("hparams/s3router.yaml", "--synthetic_size=tiny", "--number_of_epochs=1",
                      "--cost_repeats=1", "--lm_decoding=False", "--lr=0",
                      "--ssl_frozen_steps=0", f"--output_folder={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = export_inference(run)
    with open(run / "test-clean.csv", encoding="utf-8") as f:
        wavs = [row["wav"] for row in csv.DictReader(f)][:3]
    data, rate = sf.read(wavs[0], dtype="float32")
    stereo = tmp_path / "stereo_44k.wav"  # another rate and two channels: resampled, mixed
    sf.write(stereo, np.stack([np.interp(np.arange(0, len(data), rate / 44100),
                                         np.arange(len(data)), data)] * 2, 1), 44100)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), dtype="float32"), 16000)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio at all" * 10)
    missing = tmp_path / "missing.flac"
    files = [wavs[0], empty, garbage, wavs[1], missing, str(stereo), wavs[2]]
    proc = run_python("-m", "s3brain.inference.transcribe", folder, *files)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [path for path, _ in lines] == [wavs[0], wavs[1], str(stereo), wavs[2]]
    asr = EncoderASR.from_hparams(source=str(folder), savedir=str(tmp_path / "asr"))
    for path, words in lines:
        assert words == asr.transcribe_file(path), path
    assert any(words for _, words in lines)
    for bad in (empty, garbage, missing):
        assert f"skipped {bad}:" in proc.stderr
    assert "transcribing" in proc.stderr  # the progress bar
    good = run_python("-m", "s3brain.inference.transcribe", "--no-progress", folder, wavs[0])
    assert good.returncode == 0 and good.stdout.count("\t") == 1
