"""librispeech_prepare.py on data in the real LibriSpeech layout."""

import csv
import logging
import shutil

import pytest
import soundfile as sf
from librispeech_prepare import prepare_librispeech


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_manifests_match_the_corpus(tiny_corpus, tmp_path):
    splits = ["train-10m", "train-1h", "dev-clean", "test-clean", "test-other"]
    manifests = prepare_librispeech(tiny_corpus, tmp_path, tr_splits=splits[:2],
                                    dev_splits=splits[2:3], te_splits=splits[3:])
    for split in splits:
        rows = _rows(manifests[split])
        assert list(rows[0]) == ["ID", "duration", "wav", "spk_id", "wrd"]
        expected = {}
        for trans in (tiny_corpus / "LibriSpeech" / split).glob("*/*/*.trans.txt"):
            for line in trans.read_text().splitlines():
                uid, text = line.split(" ", 1)
                expected[uid] = (text, trans.parent / f"{uid}.flac")
        assert {r["ID"] for r in rows} == set(expected)
        for row in rows:
            text, wav = expected[row["ID"]]
            assert row["wrd"] == text
            assert row["wav"] == str(wav)
            assert row["spk_id"] == row["ID"].split("-")[0]
            assert float(row["duration"]) == pytest.approx(sf.info(str(wav)).duration, abs=1e-3)
    train = _rows(manifests["train"])
    assert len(train) == len(_rows(manifests["train-10m"])) + len(_rows(manifests["train-1h"]))


def test_folder_above_librispeech_and_skip_when_done(tiny_corpus, tmp_path):
    # tiny_corpus holds LibriSpeech/; passing LibriSpeech/ itself works too.
    first = prepare_librispeech(tiny_corpus / "LibriSpeech", tmp_path, te_splits=["test-clean"])
    stamp = first["test-clean"].stat().st_mtime_ns
    again = prepare_librispeech(tiny_corpus, tmp_path, te_splits=["test-clean"])
    assert again["test-clean"].stat().st_mtime_ns == stamp


def test_wrong_layout_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_librispeech(tmp_path / "nowhere", tmp_path / "out", te_splits=["test-clean"])
    (tmp_path / "data" / "test-clean").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="trans.txt"):
        prepare_librispeech(tmp_path / "data", tmp_path / "out", te_splits=["test-clean"])
    with pytest.raises(FileNotFoundError, match="dev-clean.*LibriSpeech layout"):
        prepare_librispeech(tmp_path / "data", tmp_path / "out", te_splits=["dev-clean"])


def test_bad_audio_is_skipped_with_its_id(tiny_corpus, tmp_path, caplog):
    split = tmp_path / "LibriSpeech" / "test-clean"
    shutil.copytree(tiny_corpus / "LibriSpeech" / "test-clean", split)
    flacs = sorted(split.glob("*/*/*.flac"))
    flacs[0].write_bytes(b"")                       # zero-length file
    flacs[1].write_bytes(b"not audio at all" * 10)  # unreadable
    sf.write(str(flacs[2]), [], 16000, format="FLAC")  # valid header, no samples
    with caplog.at_level(logging.WARNING):
        manifests = prepare_librispeech(tmp_path, tmp_path / "out", te_splits=["test-clean"])
    ids = {r["ID"] for r in _rows(manifests["test-clean"])}
    for bad in flacs[:3]:
        assert bad.stem not in ids
        assert bad.stem in caplog.text
    assert len(ids) == len(flacs) - 3
