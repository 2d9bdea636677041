"""Common Voice preparation on the synthetic corpus' Common Voice layout."""

import csv
import shutil
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "recipes" / "CommonVoice"))
from common_voice_prepare import prepare_common_voice, read_manifest, read_tsv  # noqa: E402

from s3brain.data.synthetic import phonemize  # noqa: E402


@pytest.mark.parametrize("locale", ["en", "de"])
def test_rows_and_phonemes_follow_the_tsv(tiny_corpus, tmp_path, locale):
    cv = tiny_corpus / "CommonVoice"
    manifests = prepare_common_voice(cv, tmp_path, locale)
    for split in ("train", "dev", "test"):
        tsv = read_tsv(cv / locale / f"{split}.tsv")
        rows = read_manifest(manifests[split])
        assert len(rows) == len(tsv) > 0
        for row, entry in zip(rows, tsv):
            assert row["wrd"] == entry["sentence"]
            assert row["phn"] == entry["phonemes"]
            assert row["wav"].endswith(".mp3") and float(row["duration"]) > 0.5


def test_locale_folder_itself_and_espeak_for_missing_phonemes(tiny_corpus, tmp_path):
    # A real Common Voice tsv has no phonemes column: espeak-ng makes them.
    src = tiny_corpus / "CommonVoice" / "nl"
    folder = tmp_path / "nl"
    (folder / "clips").mkdir(parents=True)
    entries = read_tsv(src / "dev.tsv")[:3]
    fields = [k for k in entries[0] if k != "phonemes"]
    with open(folder / "dev.tsv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fields, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(entries + [{**entries[0], "path": "missing.mp3"},
                                    {**entries[1], "sentence": ""}])
    for entry in entries:
        shutil.copy(src / "clips" / entry["path"], folder / "clips" / entry["path"])
    manifests = prepare_common_voice(folder, tmp_path / "out", "nl", splits=["dev"])
    rows = read_manifest(manifests["dev"])
    assert [r["ID"] for r in rows] == [e["path"][:-4] for e in entries]  # bad rows left out
    assert [r["phn"] for r in rows] == [phonemize(e["sentence"], "nl") for e in entries]
    assert rows[0]["phn"] == entries[0]["phonemes"]  # the corpus' own labels come from espeak too


def test_missing_folder_names_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="clips"):
        prepare_common_voice(tmp_path / "nowhere", tmp_path / "out", "en")
