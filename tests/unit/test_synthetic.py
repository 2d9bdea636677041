"""The embedded synthetic corpus: layout, determinism, caching, held-out conditions."""

import csv

import pytest
import soundfile as sf

from s3brain.data import realtext
from s3brain.data.synthetic import (
    HELD_OUT_VOICES,
    OTHER_PITCH,
    TRAIN_PITCH,
    TRAIN_SPEED,
    corpus_dir,
    corpus_spec,
    generate,
    plan_jobs,
    synthesize,
)


def test_librispeech_layout(tiny_corpus):
    root = tiny_corpus / "LibriSpeech"
    spec = corpus_spec(size="tiny")
    for split, count in spec["librispeech"].items():
        trans = sorted((root / split).glob("*/*/*.trans.txt"))
        lines = [line for t in trans for line in t.read_text().splitlines()]
        assert len(lines) == count, split
        for t in trans:
            spk, chapter = t.parent.parent.name, t.parent.name
            assert t.name == f"{spk}-{chapter}.trans.txt"
            for line in t.read_text().splitlines():
                uid, text = line.split(" ", 1)
                assert uid.startswith(f"{spk}-{chapter}-")
                assert text == text.upper() and text.strip()
                info = sf.info(str(t.parent / f"{uid}.flac"))
                assert info.samplerate == 16000 and info.channels == 1
                # espeak at 110-210 words per minute: between 0.15 and 1 s per word
                assert 0.15 < info.duration / len(text.split()) < 1.0, (uid, info.duration)


def _transcripts(root, split):
    out = {}
    for t in (root / "LibriSpeech" / split).glob("*/*/*.trans.txt"):
        for line in t.read_text().splitlines():
            uid, text = line.split(" ", 1)
            out[uid] = text
    return out


def test_train_10m_inside_1h_and_evaluation_sentences_unseen(tiny_corpus):
    ten, hour = _transcripts(tiny_corpus, "train-10m"), _transcripts(tiny_corpus, "train-1h")
    assert ten.items() <= hour.items()
    train_text = set(hour.values()) | set(_transcripts(tiny_corpus, "train-pool").values())
    for split in ("dev-clean", "test-clean", "test-other"):
        assert not set(_transcripts(tiny_corpus, split).values()) & train_text, split


def test_test_other_conditions_never_in_training():
    jobs = plan_jobs(corpus_spec(seed=3, size="default"))
    train = [j for j in jobs if j["split"].startswith("train") or j["split"].startswith("cv-")]
    other = [j for j in jobs if j["split"] == "test-other"]
    assert other and {j["voice"] for j in other} <= set(HELD_OUT_VOICES)
    assert not {j["voice"] for j in other} & {j["voice"] for j in train}
    for j in other:
        assert not TRAIN_PITCH[0] <= j["pitch"] <= TRAIN_PITCH[1]
        assert any(lo <= j["pitch"] <= hi for lo, hi in OTHER_PITCH)
        assert not TRAIN_SPEED[0] - 4 <= j["speed"] <= TRAIN_SPEED[1] + 4
    for j in train:
        assert TRAIN_PITCH[0] <= j["pitch"] <= TRAIN_PITCH[1]


def test_seed_determines_plan():
    a, b = plan_jobs(corpus_spec(seed=0, size="tiny")), plan_jobs(corpus_spec(seed=0, size="tiny"))
    c = plan_jobs(corpus_spec(seed=1, size="tiny"))
    assert a == b
    assert [j["text"] for j in a] != [j["text"] for j in c]


def test_second_call_is_cached(tiny_corpus, monkeypatch):
    """A corpus already there is reused: nothing is spoken again, no file rewritten."""
    from s3brain.data import synthetic

    files = {p: p.stat().st_mtime_ns for p in tiny_corpus.rglob("*") if p.is_file()}

    def speak_again(*args, **kwargs):
        raise AssertionError("an utterance was synthesized again")

    monkeypatch.setattr(synthetic, "synthesize", speak_again)
    assert generate(size="tiny", progress=False) == tiny_corpus
    assert {p: p.stat().st_mtime_ns for p in files} == files
    assert {p for p in tiny_corpus.rglob("*") if p.is_file()} == set(files)


def test_regeneration_replaces_stale_parts(tmp_path):
    out = generate(root=tmp_path, seed=5, size="tiny", progress=False)
    stale = out / "LibriSpeech" / "dev-clean" / "9999" / "99990"
    stale.mkdir(parents=True)
    (stale / "9999-99990.trans.txt").write_text("9999-99990-0000 STALE\n")
    (out / ".done" / "dev-clean").write_text("{}")  # as if made by another version
    generate(root=tmp_path, seed=5, size="tiny", progress=False)
    assert not stale.exists()
    assert len(_transcripts(out, "dev-clean")) == corpus_spec(size="tiny")["librispeech"]["dev-clean"]


def test_commonvoice_layout(tiny_corpus):
    spec = corpus_spec(size="tiny")["commonvoice"]
    assert len(spec["langs"]) >= 4
    for lang in spec["langs"]:
        for split in ("train", "dev", "test"):
            with open(tiny_corpus / "CommonVoice" / lang / f"{split}.tsv", encoding="utf-8") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            assert len(rows) == spec[split]
            assert {"client_id", "path", "sentence", "locale", "phonemes"} <= set(rows[0])
            for row in rows:
                assert row["locale"] == lang and row["phonemes"].strip()
                assert "ˈ" not in row["phonemes"]
                info = sf.info(str(tiny_corpus / "CommonVoice" / lang / "clips" / row["path"]))
                # as the real corpus ships: 48 kHz mp3, resampled by the recipes
                assert info.format == "MP3" and info.samplerate == 48000 and info.frames > 0


def test_generation_lock_lets_one_writer_in_at_a_time(tmp_path):
    """Two processes (pytest-xdist workers, DDP ranks) generating one corpus: the second waits
    until the first is done."""
    import subprocess
    import sys
    import time

    from s3brain.data.synthetic import generation_lock

    folder, log = tmp_path / "corpus", tmp_path / "log"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time, pathlib\n"
        "from s3brain.data.synthetic import generation_lock\n"
        f"log = pathlib.Path({str(log)!r})\n"
        f"with generation_lock({str(folder)!r}):\n"
        "    log.write_text('start\\n'); time.sleep(1.5)\n"
        "    log.write_text('start\\nend\\n')\n")])
    deadline = time.time() + 60
    while not log.exists() and time.time() < deadline:
        time.sleep(0.05)
    with generation_lock(folder):
        assert log.read_text() == "start\nend\n"  # the holder had finished before we got in
    assert holder.wait(timeout=60) == 0


# Fingerprints of the old sizes, computed by the code before the WordNet sizes were added: their
# corpora (and the README's numbers measured on them) must stay exactly as they were.
OLD_SIZES = {  # size: (sha1 of corpus_spec(0, size), sha1 of plan_jobs(corpus_spec(0, size)))
    "default": ("ba7c1ce532eba5a2fbc0d5df9837465c63261f18",
                "09dc6412163cb30f54929c4cd00260d7fb677976"),
    "tiny": ("99313576c0ad35ddc3ddd5ea759b213bf20cf0b6",
             "69ebc086084bdad7e05eaed91dad736c2d500299"),
}


def _sha1(value):
    import hashlib
    import json

    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("size", sorted(OLD_SIZES))
def test_grammar_sizes_are_unchanged(size):
    spec = corpus_spec(seed=0, size=size)
    assert (_sha1(spec), _sha1(plan_jobs(spec))) == OLD_SIZES[size]
    assert _sha1(plan_jobs(corpus_spec(seed=3, size="tiny"))) == \
        "452e215e6bb60e1119521bc7e27e9f659e422949"


def _split_texts(jobs):
    texts = {}
    for job in jobs:
        texts.setdefault(job["split"], []).append(job["text"])
    return texts


def test_realtext_splits_sizes_disjointness_and_vocabulary():
    spec = corpus_spec(seed=0, size="realtext")
    jobs = plan_jobs(spec)
    texts = _split_texts(jobs)
    assert {split: len(t) for split, t in texts.items()} == spec["librispeech"]  # no CommonVoice
    for split in ("dev-clean", "test-clean", "test-other"):
        assert len(texts[split]) >= 1000
    evaluation = {t for s in ("dev-clean", "test-clean", "test-other") for t in texts[s]}
    training = {t for s in ("train-10m", "train-1h", "train-pool") for t in texts[s]}
    assert len(evaluation) == 3000 and not evaluation & training
    assert set(texts["train-10m"]) <= set(texts["train-1h"])
    assert len({w for t in evaluation | training for w in t.split()}) >= 5000
    assert len({w for t in evaluation for w in t.split()}) >= 5000
    real = {s.transcript for s in realtext.sentences()}
    assert evaluation | training <= real
    for job in jobs:  # spoken as written (espeak-ng spells upper-case US or IT)
        assert job["speak"].upper() == job["text"] and job["speak"] != job["text"]
    other = [j for j in jobs if j["split"] == "test-other"]
    assert {j["voice"] for j in other} <= set(HELD_OUT_VOICES)
    heard = {j["voice"] for j in jobs if j["split"] != "test-other"}
    assert not {j["voice"] for j in other} & heard


def test_realtext_split_depends_on_the_seed_only():
    a = plan_jobs(corpus_spec(seed=0, size="realtext-tiny"))
    assert a == plan_jobs(corpus_spec(seed=0, size="realtext-tiny"))
    b = plan_jobs(corpus_spec(seed=1, size="realtext-tiny"))
    assert [j["text"] for j in a] != [j["text"] for j in b]
    # the tiny size is the full size's split with fewer utterances: the same shuffle
    full = _split_texts(plan_jobs(corpus_spec(seed=0, size="realtext")))
    assert _split_texts(a)["test-other"] == full["test-other"][:4]
    text_hash = corpus_spec(size="realtext")["text_sha1"]
    assert text_hash == corpus_spec(size="realtext-tiny")["text_sha1"]


def test_realtext_corpus_has_its_own_folder_and_layout(tmp_path):
    out = generate(root=tmp_path, seed=0, size="realtext-tiny", progress=False)
    assert out == corpus_dir(0, "realtext-tiny", tmp_path) and out.name == "realtext-tiny-seed0"
    assert not (out / "CommonVoice").exists()
    spec = corpus_spec(size="realtext-tiny")
    planned = _split_texts(plan_jobs(spec))
    for split, count in spec["librispeech"].items():
        written = _transcripts(out, split)
        assert sorted(written.values()) == sorted(planned[split]) and len(written) == count
        for uid, text in written.items():
            flac = next((out / "LibriSpeech" / split).glob(f"*/*/{uid}.flac"))
            info = sf.info(str(flac))
            assert info.samplerate == 16000
            assert 0.15 < info.duration / len(text.split()) < 1.0, (uid, info.duration)


def test_a_job_gives_the_same_bytes_every_time(tmp_path):
    """espeak-ng is deterministic and sox dithers with its repeatable numbers (``-R``): the same
    job written twice (16 kHz flac, and 48 kHz mp3 as CommonVoice) gives identical files."""
    jobs = plan_jobs(corpus_spec(seed=0, size="tiny"))
    for job in (jobs[0], next(j for j in jobs if j["split"].startswith("cv-"))):
        first, second = tmp_path / "a", tmp_path / "b"
        assert synthesize(job, first) == synthesize(job, second)
        assert (first / job["path"]).read_bytes() == (second / job["path"]).read_bytes()
