"""The SUPERB-like prepare scripts on folders laid out like the real datasets, and the synthetic
plan's ``largetest`` size (``default`` unchanged, plus extra test clips)."""

import csv
import hashlib
import json
import sys
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO

from s3brain.data import superb

sys.path.insert(0, str(REPO / "recipes" / "SUPERB" / "KS"))
sys.path.insert(0, str(REPO / "recipes" / "SUPERB" / "SID"))
sys.path.insert(0, str(REPO / "recipes" / "SUPERB" / "IC"))
sys.path.insert(0, str(REPO / "recipes" / "SUPERB" / "PR"))

from fluent_speech_commands_prepare import prepare_fluent_speech_commands  # noqa: E402
from prosody_prepare import prepare_prosody  # noqa: E402
from speech_commands_prepare import prepare_speech_commands  # noqa: E402
from voxceleb_prepare import prepare_voxceleb1  # noqa: E402


def _wav(path, seconds=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * 16000), dtype=np.float32), 16000)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_speech_commands_layout(tmp_path):
    data = tmp_path / "speech_commands"
    for word in ("yes", "no", "bed", "cat"):
        for spk in ("aaaa1111", "bbbb2222", "cccc3333"):
            _wav(data / word / f"{spk}_nohash_0.wav")
    (data / "validation_list.txt").write_text("yes/bbbb2222_nohash_0.wav\nbed/bbbb2222_nohash_0.wav\n")
    (data / "testing_list.txt").write_text("".join(f"{w}/cccc3333_nohash_0.wav\n"
                                                   for w in ("yes", "no", "bed", "cat")))
    _wav(data / "_background_noise_" / "white_noise.wav", seconds=30)
    paths = prepare_speech_commands(data, tmp_path / "out", keywords=["yes", "no"])
    train, valid, test = (_rows(paths[s]) for s in ("train", "valid", "test"))
    words = [r for r in train if r["spk_id"] != "_silence_"]
    assert len(words) == 4 + 2  # all of aaaa, and the bbbb files not in the validation list
    assert {r["label"] for r in words} == {"yes", "no", "_unknown_"}
    assert [r["label"] for r in words if r["wav"].endswith("cat/aaaa1111_nohash_0.wav")] == \
        ["_unknown_"]
    assert sorted(r["label"] for r in test if r["spk_id"] != "_silence_") == \
        ["_unknown_", "_unknown_", "no", "yes"]
    assert {r["ID"] for r in valid if r["spk_id"] != "_silence_"} == \
        {"yes_bbbb2222_nohash_0", "bed_bbbb2222_nohash_0"}
    # _silence_: about one class's worth, 1 s crops from the split's own part of the noise
    silence = [r for r in train if r["label"] == "_silence_"]
    assert len(silence) == round(6 / 3)
    for rows, (lo, hi) in ((train, (0, 0.8)), (test, (0.9, 1.0))):
        for r in rows:
            if r["label"] == "_silence_":
                start, stop = int(r["start"]), int(r["stop"])
                assert stop - start == 16000
                assert lo * 30 * 16000 <= start and stop <= hi * 30 * 16000 + 1
    with pytest.raises(FileNotFoundError, match="validation_list.txt"):
        prepare_speech_commands(tmp_path / "empty", tmp_path / "out2")


def test_voxceleb1_identification_split(tmp_path):
    data = tmp_path / "vox"
    lines = []
    for spk in ("id10001", "id10002"):
        for code, n in ((1, 1), (1, 2), (2, 3), (3, 4)):
            rel = f"{spk}/vid{n}/{n:05d}.wav"
            _wav(data / "wav" / rel, 0.5)
            lines.append(f"{code} {rel}")
    lines.append("1 id10003/gone/00001.wav")  # listed but missing: skipped with a warning
    (data / "iden_split.txt").write_text("\n".join(lines) + "\n")
    paths = prepare_voxceleb1(data, tmp_path / "out")
    train, valid, test = (_rows(paths[s]) for s in ("train", "valid", "test"))
    assert (len(train), len(valid), len(test)) == (4, 2, 2)
    assert {r["label"] for r in test} == {"id10001", "id10002"}
    assert all(r["label"] == r["spk_id"] for r in train)
    (data / "iden_split.txt").write_text("4 id10001/vid1/00001.wav\n")
    with pytest.raises(ValueError, match="split code"):
        prepare_voxceleb1(data, tmp_path / "out3")


def test_fluent_speech_commands_csvs(tmp_path):
    data = tmp_path / "fsc"
    (data / "data").mkdir(parents=True)
    for split, spk in (("train", "s1"), ("valid", "s2"), ("test", "s3")):
        _wav(data / "wavs" / "speakers" / spk / f"{split}1.wav", 0.7)
        (data / "data" / f"{split}_data.csv").write_text(
            ",path,speakerId,transcription,action,object,location\n"
            f"0,wavs/speakers/{spk}/{split}1.wav,{spk},Turn on the lights in the kitchen,"
            "activate,lights,kitchen\n")
    paths = prepare_fluent_speech_commands(data, tmp_path / "out")
    row = _rows(paths["test"])[0]
    assert (row["action"], row["object"], row["location"], row["spk_id"]) == \
        ("activate", "lights", "kitchen", "s3")
    assert float(row["duration"]) == pytest.approx(0.7)


def test_prosody_folders(tmp_path):
    data = tmp_path / "prosody"
    for split in ("train", "valid", "test"):
        for label in ("neutral", "high"):
            _wav(data / split / label / f"spk{split}_000.wav", 0.3)
    paths = prepare_prosody(data, tmp_path / "out")
    rows = _rows(paths["valid"])
    assert sorted(r["label"] for r in rows) == ["high", "neutral"]
    assert {r["spk_id"] for r in rows} == {"spkvalid"}


# the fingerprint (sha1 of the plan) in the marks of every default corpus generated so far:
# adding sizes must never change it
DEFAULT_PLAN_SHA1 = {0: "33ea20a1859821ddce148ec780582673371f9a11",
                     1: "7567fc3d99b05aafddf8b10b93e32a9629b089c1"}


def _plan_sha1(jobs):
    return hashlib.sha1(json.dumps(jobs, sort_keys=True).encode()).hexdigest()


def _extra_test_jobs(seed=0):
    """The largetest plan's jobs beyond default's (checked to be its prefix elsewhere)."""
    return superb.plan_superb_jobs(seed, "largetest")[len(superb.plan_superb_jobs(seed)):]


def _speakers(jobs, task, splits):
    return {j["speaker"] for j in jobs if j["task"] == task and j["split"] in splits}


@pytest.mark.parametrize("seed", [0, 1])
def test_largetest_plan_is_default_plan_then_extra_test_clips(seed):
    default = superb.plan_superb_jobs(seed, "default")
    assert _plan_sha1(default) == DEFAULT_PLAN_SHA1[seed]
    largetest = superb.plan_superb_jobs(seed, "largetest")
    assert largetest[:len(default)] == default
    extra = largetest[len(default):]
    assert extra and all(j["split"] == "test" for j in extra)
    assert largetest == superb.plan_superb_jobs(seed, "largetest")  # deterministic
    assert extra != _extra_test_jobs(1 - seed)
    paths = [j["path"] for j in largetest]
    assert len(set(paths)) == len(paths)  # no extra clip overwrites another
    assert superb.superb_dir(seed, "largetest", "/x") != superb.superb_dir(seed, "default", "/x")


def test_largetest_test_set_sizes():
    largetest = superb.plan_superb_jobs(0, "largetest")
    extra = Counter(j["task"] for j in _extra_test_jobs())
    assert extra == {"speech_commands": 24 * 15, "voxceleb1": 16 * 13,
                     "fluent_speech_commands": 16 * 16, "prosody": 24 * 4 * 3}
    tests = Counter(j["task"] for j in largetest if j["split"] == "test")
    assert tests == {"speech_commands": 450, "voxceleb1": 256, "fluent_speech_commands": 320,
                     "prosody": 360}
    # prosody stays balanced: every class gets the same number of clips
    assert set(Counter(j["label"] for j in largetest if j["task"] == "prosody"
                       and j["split"] == "test").values()) == {90}
    # identification: 16 test clips per speaker, keyword spotting: every keyword per speaker
    assert set(Counter(j["speaker"] for j in largetest if j["task"] == "voxceleb1"
                       and j["split"] == "test").values()) == {16}
    for speaker in _speakers(largetest, "speech_commands", {"test"}):
        words = {j["label"] for j in largetest if j["speaker"] == speaker}
        assert set(superb.KEYWORDS) < words and len(words) == 15


def test_largetest_identification_stays_closed_set_with_new_sentences():
    largetest = superb.plan_superb_jobs(0, "largetest")
    extra = [j for j in _extra_test_jobs() if j["task"] == "voxceleb1"]
    train_dev = [j for j in largetest if j["task"] == "voxceleb1" and j["split"] != "test"]
    assert {j["speaker"] for j in extra} == {j["speaker"] for j in train_dev if
                                             j["split"] == "train"}
    assert {(j["speaker"], j["text"]) for j in extra}.isdisjoint(
        (j["speaker"], j["text"]) for j in train_dev)
    assert len({(j["speaker"], j["text"]) for j in extra}) == len(extra)
    voice = {j["speaker"]: (j["voice"], j["pitch"], j["gap"]) for j in train_dev}
    assert all(voice[j["speaker"]] == (j["voice"], j["pitch"], j["gap"]) for j in extra)
    assert all(j["code"] == 3 for j in extra)


def test_largetest_new_test_speakers_are_unseen():
    largetest = superb.plan_superb_jobs(0, "largetest")
    extra = _extra_test_jobs()
    for task, count in (("speech_commands", 24), ("fluent_speech_commands", 16),
                        ("prosody", 24)):
        new = _speakers(extra, task, {"test"})
        assert len(new) == count
        assert new.isdisjoint(_speakers(largetest[:-len(extra)], task,
                                        {"train", "valid", "test"}))


def test_largetest_layout_files_list_the_extra_test_clips(tmp_path):
    jobs = superb.plan_superb_jobs(0, "largetest")
    for task in ("speech_commands", "voxceleb1", "fluent_speech_commands"):
        (tmp_path / task).mkdir()  # the clips' folders, made by synthesis
        superb._write_indexes(tmp_path, task, [j for j in jobs if j["task"] == task])
    extra = _extra_test_jobs()
    testing = (tmp_path / "speech_commands" / "testing_list.txt").read_text().splitlines()
    assert len(testing) == 450
    assert {j["path"].split("/", 1)[1] for j in extra
            if j["task"] == "speech_commands"} <= set(testing)
    iden = [line.split() for line in (tmp_path / "voxceleb1" / "iden_split.txt").read_text()
            .splitlines()]
    assert Counter(code for code, _ in iden) == {"1": 128, "2": 32, "3": 256}
    assert {("3", j["path"].split("/", 2)[2]) for j in extra
            if j["task"] == "voxceleb1"} <= {tuple(line) for line in iden}
    rows = _rows(tmp_path / "fluent_speech_commands" / "data" / "test_data.csv")
    assert len(rows) == 320
    assert {j["path"].split("/", 1)[1] for j in extra
            if j["task"] == "fluent_speech_commands"} <= {r["path"] for r in rows}
