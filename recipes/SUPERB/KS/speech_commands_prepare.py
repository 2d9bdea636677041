"""Manifests for keyword spotting from a Speech Commands folder (v0.02 layout), as in SUPERB KS:
12 classes, the 10 keywords, ``_unknown_`` (every other word) and ``_silence_`` (1 s crops of
the ``_background_noise_`` recordings, as many as an average class has).

Layout: ``<data_folder>/<word>/<speaker>_nohash_<n>.wav``, ``validation_list.txt`` and
``testing_list.txt`` (files relative to ``data_folder``; every other file is training data),
``_background_noise_/*.wav``.

Writes ``train.csv``, ``valid.csv`` and ``test.csv`` in ``save_folder`` with the columns
``ID,duration,wav,start,stop,spk_id,label`` (``start``/``stop`` in samples, -1 for the whole
file); skipped when they exist with the same options.
"""

import logging
import random
from pathlib import Path

import soundfile as sf

from s3brain.data.manifests import manifest_paths, manifests_ready, write_manifests

logger = logging.getLogger(__name__)

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
COLUMNS = ["ID", "duration", "wav", "start", "stop", "spk_id", "label"]
SPLITS = ("train", "valid", "test")
# which part of each noise recording each split's silence crops come from
NOISE_PARTS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}


def prepare_speech_commands(data_folder, save_folder, keywords=KEYWORDS, seed=0, skip_prep=False):
    """Write the manifests (skipped when they exist with the same options).

    Arguments
    ---------
    data_folder : str or Path
        The dataset's folder (the Speech Commands v0.02 layout).
    save_folder : str or Path
        Where ``train.csv``, ``valid.csv`` and ``test.csv`` go.
    keywords : list of str
        The words that are classes of their own; every other word is ``_unknown_``.
    seed : int
        Seed of the ``_silence_`` crops' positions.
    skip_prep : bool
        Return the manifest paths without checking or writing them.

    Returns
    -------
    dict
        ``{"train", "valid", "test": csv path}``.
    """
    data_folder, save_folder = Path(data_folder), Path(save_folder)
    paths = manifest_paths(save_folder, SPLITS)
    options = {"data_folder": str(data_folder), "keywords": list(keywords), "seed": seed}
    if skip_prep or manifests_ready(paths, options):
        return paths
    lists = {}
    for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
        index = data_folder / name
        if not index.is_file():
            raise FileNotFoundError(f"{index} not found: {data_folder} is not a Speech Commands "
                                    f"folder (it needs {name})")
        lists.update({line.strip(): split for line in index.read_text().splitlines()
                      if line.strip()})
    rows = {split: [] for split in SPLITS}
    words = sorted(p for p in data_folder.iterdir() if p.is_dir() and not p.name.startswith("_"))
    if not words:
        raise FileNotFoundError(f"no word folders in {data_folder}")
    for folder in words:
        for wav in sorted(folder.glob("*.wav")):
            rel = f"{folder.name}/{wav.name}"
            split = lists.get(rel, "train")
            rows[split].append({
                "ID": f"{folder.name}_{wav.stem}", "duration": round(sf.info(wav).duration, 3),
                "wav": str(wav), "start": -1, "stop": -1,
                "spk_id": wav.name.split("_nohash_")[0],
                "label": folder.name if folder.name in keywords else "_unknown_"})
    noises = sorted((data_folder / "_background_noise_").glob("*.wav"))
    rng = random.Random(seed)
    for split in SPLITS:
        count = round(len(rows[split]) / (len(keywords) + 1))
        if not noises:
            logger.warning("no _background_noise_ recordings: no _silence_ class")
            break
        for i in range(count):
            noise = noises[i % len(noises)]
            info = sf.info(noise)
            lo, hi = (int(f * info.frames) for f in NOISE_PARTS[split])
            start = rng.randint(lo, max(lo, hi - info.samplerate))
            rows[split].append({"ID": f"_silence_{split}_{i:04d}", "duration": 1.0,
                                "wav": str(noise), "start": start,
                                "stop": start + info.samplerate, "spk_id": "_silence_",
                                "label": "_silence_"})
    return write_manifests(paths, rows, COLUMNS, options)
