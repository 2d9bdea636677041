"""Manifests for intent classification with slots from a Fluent Speech Commands folder, as in
SUPERB IC: three targets per utterance, ``action``, ``object`` and ``location``.

Layout: ``<data_folder>/data/{train,valid,test}_data.csv`` with the columns
``,path,speakerId,transcription,action,object,location`` (``path`` relative to ``data_folder``,
under ``wavs/speakers/<speakerId>/``).

Writes ``train.csv``, ``valid.csv`` and ``test.csv`` with
``ID,duration,wav,start,stop,spk_id,transcription,action,object,location``.
"""

import csv
import logging
from pathlib import Path

import soundfile as sf

from s3brain.data.manifests import manifest_paths, manifests_ready, write_manifests

logger = logging.getLogger(__name__)

COLUMNS = ["ID", "duration", "wav", "start", "stop", "spk_id", "transcription", "action",
           "object", "location"]
SPLITS = ("train", "valid", "test")


def prepare_fluent_speech_commands(data_folder, save_folder, skip_prep=False):
    """Write the manifests (skipped when they exist with the same options).

    Arguments
    ---------
    data_folder : str or Path
        The dataset's folder (the Fluent Speech Commands layout).
    save_folder : str or Path
        Where ``train.csv``, ``valid.csv`` and ``test.csv`` go.
    skip_prep : bool
        Return the manifest paths without checking or writing them.

    Returns
    -------
    dict
        ``{"train", "valid", "test": csv path}``.
    """
    data_folder, save_folder = Path(data_folder), Path(save_folder)
    paths = manifest_paths(save_folder, SPLITS)
    options = {"data_folder": str(data_folder)}
    if skip_prep or manifests_ready(paths, options):
        return paths
    rows = {}
    for split in SPLITS:
        source = data_folder / "data" / f"{split}_data.csv"
        if not source.is_file():
            raise FileNotFoundError(f"{source} not found: {data_folder} is not a Fluent Speech "
                                    f"Commands folder")
        rows[split] = []
        with open(source, newline="") as f:
            for row in csv.DictReader(f):
                wav = data_folder / row["path"]
                if not wav.is_file():
                    logger.warning("Skipping %s: listed in %s but missing", wav, source.name)
                    continue
                rows[split].append({
                    "ID": wav.stem, "duration": round(sf.info(wav).duration, 3), "wav": str(wav),
                    "start": -1, "stop": -1, "spk_id": row["speakerId"],
                    "transcription": row["transcription"], "action": row["action"],
                    "object": row["object"], "location": row["location"]})
    return write_manifests(paths, rows, COLUMNS, options)
