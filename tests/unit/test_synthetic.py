"""The embedded synthetic corpus: layout, determinism, caching, held-out conditions."""

import csv
import time

import soundfile as sf

from s3brain.data.synthetic import (HELD_OUT_VOICES, OTHER_PITCH, TRAIN_PITCH, TRAIN_SPEED,
                                    corpus_spec, generate, plan_jobs)


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


def test_second_call_is_cached(tiny_corpus):
    flac = next((tiny_corpus / "LibriSpeech" / "test-clean").glob("*/*/*.flac"))
    before = flac.stat().st_mtime_ns
    start = time.perf_counter()
    assert generate(size="tiny", progress=False) == tiny_corpus
    assert time.perf_counter() - start < 2.0
    assert flac.stat().st_mtime_ns == before


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
