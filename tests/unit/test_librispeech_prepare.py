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


def _lm_text_splits():
    """The recipe's ``lm_text_splits``, as its yaml gives them."""
    import json
    import re

    from conftest import RECIPE

    text = (RECIPE / "hparams" / "weight_ft.yaml").read_text()
    return json.loads(re.search(r"^lm_text_splits: (\[.*\])", text, re.M).group(1))


def test_lm_text_of_the_realtext_corpus_holds_no_evaluation_sentence(tmp_path):
    """The recipe estimates its n-gram from ``transcripts(root, lm_text_splits)`` and the lines
    of ``lm_text_files``: training transcripts and unspoken WordNet sentences, never an
    evaluation sentence; the grammar corpora have no LM text file."""
    from librispeech_prepare import transcripts

    from s3brain.data import realtext
    from s3brain.data.synthetic import (
        corpus_spec,
        generate,
        lm_text_files,
        plan_jobs,
        unspoken_sentences,
    )

    splits = _lm_text_splits()
    assert set(splits) <= {"train-10m", "train-1h", "train-pool"}
    assert lm_text_files(0, "default") == lm_text_files(0, "tiny") == []
    corpus = generate(root=tmp_path, size="realtext-tiny", progress=False)
    lm_text = transcripts(corpus, splits)
    evaluation = transcripts(corpus, ["dev-clean", "test-clean", "test-other"])
    assert lm_text and len(evaluation) == 12 and not set(lm_text) & set(evaluation)
    [text_file] = lm_text_files(0, "realtext-tiny", root=tmp_path)
    unspoken = text_file.read_text(encoding="utf-8").splitlines()
    every = {s.transcript for s in realtext.sentences()}
    spoken = set(lm_text) | set(evaluation)
    # every WordNet sentence is either spoken by the corpus or in the text file, never both
    assert set(unspoken) == every - spoken and len(unspoken) == len(set(unspoken))
    flac = next(corpus.glob("LibriSpeech/test-clean/*/*/*.flac"))
    written = flac.stat().st_mtime_ns
    text_file.unlink()  # a lost text file comes back, equal, without any audio made again
    assert generate(root=tmp_path, size="realtext-tiny", progress=False) == corpus
    assert text_file.read_text(encoding="utf-8").splitlines() == unspoken
    assert flac.stat().st_mtime_ns == written
    # the full size, as planned: no dev or test sentence among the training transcripts
    spec = corpus_spec(size="realtext")
    jobs = plan_jobs(spec)
    lm_full = {j["text"] for j in jobs if j["split"] in splits}
    tests = {j["text"] for j in jobs if j["split"] in ("dev-clean", "test-clean", "test-other")}
    sizes = spec["librispeech"]
    assert len(lm_full) == sizes["train-1h"] + sizes["train-pool"] and len(tests) == 3000
    assert not lm_full & tests
    assert not set(unspoken_sentences(jobs)) & tests

