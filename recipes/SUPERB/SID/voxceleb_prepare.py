"""Manifests for speaker identification from a VoxCeleb1 folder, as in SUPERB SID.

Layout: ``<data_folder>/wav/<speaker id>/<video>/<nnnnn>.wav`` and ``iden_split.txt``, one line
per file: ``1`` (train), ``2`` (dev) or ``3`` (test), then the path relative to ``wav/``.

Writes ``train.csv``, ``valid.csv`` and ``test.csv`` with ``ID,duration,wav,start,stop,spk_id,
label`` (the label is the speaker id); skipped when they exist with the same options.
"""

import logging
from pathlib import Path

import soundfile as sf

from s3brain.data.manifests import manifest_paths, manifests_ready, write_manifests

logger = logging.getLogger(__name__)

COLUMNS = ["ID", "duration", "wav", "start", "stop", "spk_id", "label"]
CODES = {"1": "train", "2": "valid", "3": "test"}


def prepare_voxceleb1(data_folder, save_folder, split_file="iden_split.txt", skip_prep=False):
    """Write the manifests (skipped when they exist with the same options).

    Arguments
    ---------
    data_folder : str or Path
        The dataset's folder (``wav/<id>/<video>/<n>.wav``).
    save_folder : str or Path
        Where ``train.csv``, ``valid.csv`` and ``test.csv`` go.
    split_file : str
        VoxCeleb1's identification split list, relative to ``data_folder``.
    skip_prep : bool
        Return the manifest paths without checking or writing them.

    Returns
    -------
    dict
        ``{"train", "valid", "test": csv path}``.
    """
    data_folder, save_folder = Path(data_folder), Path(save_folder)
    paths = manifest_paths(save_folder, CODES.values())
    options = {"data_folder": str(data_folder), "split_file": split_file}
    if skip_prep or manifests_ready(paths, options):
        return paths
    index = data_folder / split_file
    if not index.is_file():
        raise FileNotFoundError(f"{index} not found: {data_folder} is not a VoxCeleb1 folder")
    rows = {split: [] for split in CODES.values()}
    for number, line in enumerate(index.read_text().splitlines(), 1):
        if not line.strip():
            continue
        code, rel = line.split()
        if code not in CODES:
            raise ValueError(f"{index}:{number}: split code {code!r} is not 1, 2 or 3")
        wav = data_folder / "wav" / rel
        if not wav.is_file():
            logger.warning("Skipping %s: listed in %s but missing", wav, split_file)
            continue
        speaker = rel.split("/")[0]
        rows[CODES[code]].append({"ID": rel.replace("/", "_").removesuffix(".wav"),
                                  "duration": round(sf.info(wav).duration, 3), "wav": str(wav),
                                  "start": -1, "stop": -1, "spk_id": speaker, "label": speaker})
    return write_manifests(paths, rows, COLUMNS, options)
