"""Manifests for the prosody classification task (our synthetic paralinguistic task, see
``s3brain.data.superb``): ``<data_folder>/<split>/<class>/<speaker>_<n>.wav`` with the splits
``train``, ``valid`` and ``test``.

Writes ``train.csv``, ``valid.csv`` and ``test.csv`` with ``ID,duration,wav,start,stop,spk_id,
label``.
"""

import logging
from pathlib import Path

import soundfile as sf

from s3brain.data.manifests import manifest_paths, manifests_ready, write_manifests

logger = logging.getLogger(__name__)

COLUMNS = ["ID", "duration", "wav", "start", "stop", "spk_id", "label"]
SPLITS = ("train", "valid", "test")


def prepare_prosody(data_folder, save_folder, skip_prep=False):
    """Write the manifests (skipped when they exist with the same options).

    Arguments
    ---------
    data_folder : str or Path
        The dataset's folder (``<split>/<class>/<speaker>_<n>.wav``).
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
        folder = data_folder / split
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: {data_folder} needs train/, valid/ and "
                                    f"test/ with a folder per class")
        rows[split] = [{"ID": f"{split}_{wav.parent.name}_{wav.stem}",
                 "duration": round(sf.info(wav).duration, 3), "wav": str(wav), "start": -1,
                 "stop": -1, "spk_id": wav.stem.rsplit("_", 1)[0], "label": wav.parent.name}
                for wav in sorted(folder.glob("*/*.wav"))]
    return write_manifests(paths, rows, COLUMNS, options)
