"""Data preparation for LibriSpeech and Libri-light style splits.

Reads the real corpus layout::

    <data_folder>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <data_folder>/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

and writes one SpeechBrain CSV manifest per split (``ID,duration,wav,spk_id,wrd``). A split is a
folder name, so the standard splits (``train-clean-100``, ``dev-clean``, ``test-other``, ...) and
Libri-light fine-tuning subsets laid out the same way (``train-10m``, ``train-1h``, ``train-10h``)
are chosen alike. ``data_folder`` may also be the folder above ``LibriSpeech/``.

Audio that cannot be read or holds no samples is reported with its ID and left out.

Example
-------
>>> import tempfile
>>> from s3brain.data.synthetic import generate
>>> corpus = generate(size="tiny", progress=False)
>>> with tempfile.TemporaryDirectory() as out:
...     manifests = prepare_librispeech(corpus, out, tr_splits=["train-10m"], te_splits=["test-clean"])
...     sorted(manifests)
['test-clean', 'train', 'train-10m']
"""

import csv
import json
import logging
import os
from pathlib import Path

import soundfile as sf

logger = logging.getLogger(__name__)

LAYOUT = "<data_folder>/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt beside the .flac files"


def find_librispeech_root(data_folder, splits):
    """The folder that holds the split folders: ``data_folder`` or ``data_folder/LibriSpeech``."""
    data_folder = Path(data_folder)
    for candidate in (data_folder, data_folder / "LibriSpeech"):
        if splits and all((candidate / s).is_dir() for s in splits):
            return candidate
    if not data_folder.is_dir():
        raise FileNotFoundError(f"LibriSpeech data folder {data_folder} does not exist. Expected {LAYOUT}.")
    present = sorted(p.name for p in data_folder.iterdir() if p.is_dir())
    missing = [s for s in splits if not (data_folder / s).is_dir()]
    raise FileNotFoundError(
        f"Split folder(s) {missing} not found in {data_folder} (it holds {present}). "
        f"Expected the LibriSpeech layout {LAYOUT}.")


def read_split(split_dir):
    """Rows ``(ID, duration, wav, spk_id, wrd)`` of one split folder and the skipped IDs with reasons."""
    split_dir = Path(split_dir)
    trans_files = sorted(split_dir.glob("*/*/*.trans.txt"))
    if not trans_files:
        raise FileNotFoundError(f"No <speaker>-<chapter>.trans.txt in {split_dir}. Expected {LAYOUT}.")
    rows, skipped = [], []
    for trans in trans_files:
        for line in trans.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            uid, _, words = line.strip().partition(" ")
            wav = trans.parent / f"{uid}.flac"
            try:
                info = sf.info(str(wav))
                frames = info.frames
            except (RuntimeError, OSError) as err:  # soundfile's LibsndfileError is a RuntimeError
                skipped.append((uid, f"unreadable audio {wav}: {err}"))
                continue
            if frames <= 0:
                skipped.append((uid, f"empty audio {wav}"))
                continue
            rows.append({"ID": uid, "duration": round(frames / info.samplerate, 4), "wav": str(wav),
                         "spk_id": uid.split("-")[0], "wrd": " ".join(words.split())})
    return rows, skipped


def transcripts(data_folder, splits):
    """Every transcript line (words only) of ``splits``, read from the trans.txt files."""
    root = find_librispeech_root(data_folder, splits)
    lines = []
    for split in splits:
        for trans in sorted((root / split).glob("*/*/*.trans.txt")):
            lines += [line.partition(" ")[2].strip()
                      for line in trans.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


def write_csv(rows, path):
    """Write rows as a SpeechBrain CSV manifest (atomically)."""
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["ID", "duration", "wav", "spk_id", "wrd"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def prepare_librispeech(data_folder, save_folder, tr_splits=(), dev_splits=(), te_splits=(),
                        skip_prep=False):
    """Write ``<split>.csv`` for every split, and ``train.csv`` joining the training splits.

    Arguments
    ---------
    data_folder : str or Path
        The LibriSpeech folder (holding the split folders) or the folder above it.
    save_folder : str or Path
        Where the CSV manifests go.
    tr_splits, dev_splits, te_splits : list of str
        Split folder names.
    skip_prep : bool
        Do nothing (the manifests exist already).

    Returns
    -------
    dict
        Manifest path per split name (and ``"train"``).
    """
    save_folder = Path(save_folder)
    tr_splits, dev_splits, te_splits = list(tr_splits), list(dev_splits), list(te_splits)
    splits = tr_splits + dev_splits + te_splits
    manifests = {s: save_folder / f"{s}.csv" for s in splits}
    if tr_splits:
        manifests["train"] = save_folder / "train.csv"
    if skip_prep:
        return manifests
    root = find_librispeech_root(data_folder, splits)
    save_folder.mkdir(parents=True, exist_ok=True)
    options = {"root": str(root.resolve()), "splits": splits, "version": 1}
    opt_file = save_folder / "prepare_options.json"
    if opt_file.exists() and json.loads(opt_file.read_text()) == options and all(
            p.exists() for p in manifests.values()):
        logger.info("Manifests in %s are up to date; skipping preparation.", save_folder)
        return manifests
    train_rows = []
    for split in splits:
        rows, skipped = read_split(root / split)
        for uid, reason in skipped:
            logger.warning("Skipping %s: %s", uid, reason)
        write_csv(rows, manifests[split])
        logger.info("%s: %d utterances, %.1f min (%d skipped)", split, len(rows),
                    sum(r["duration"] for r in rows) / 60, len(skipped))
        if split in tr_splits:
            train_rows += rows
    if tr_splits:
        write_csv(train_rows, manifests["train"])
    opt_file.write_text(json.dumps(options))
    return manifests
