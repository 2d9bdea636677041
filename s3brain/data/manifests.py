"""What every prepare script does around its own reading of a layout: skip the work when the
manifests exist for the same options, and write ``<split>.csv`` files.

Example
-------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     paths = manifest_paths(tmp, ["train"])
...     before = manifests_ready(paths, {"data_folder": "x"})
...     _ = write_manifests(paths, {"train": [{"ID": "a", "wav": "a.wav"}]}, ["ID", "wav"],
...                         {"data_folder": "x"})
...     after = manifests_ready(paths, {"data_folder": "x"})
...     other = manifests_ready(paths, {"data_folder": "y"})
>>> before, after, other
(False, True, False)
"""

import csv
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def manifest_paths(save_folder, splits):
    """``{split: <save_folder>/<split>.csv}``."""
    return {split: Path(save_folder) / f"{split}.csv" for split in splits}


def _stamp(paths):
    return next(iter(paths.values())).parent / "prepare_options.json"


def manifests_ready(paths, options):
    """Whether every manifest exists and was written with the same ``options``."""
    stamp = _stamp(paths)
    return (all(p.exists() for p in paths.values()) and stamp.exists()
            and json.loads(stamp.read_text()) == options)


def write_manifests(paths, rows, columns, options):
    """Write ``rows[split]`` to each manifest (CSV with ``columns``), then the options stamp."""
    for split, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows[split])
        logger.info("%s: %d rows", split, len(rows[split]))
    _stamp(paths).write_text(json.dumps(options))
    return paths


def spread_subset(rows, limit):
    """At most ``limit`` of the manifest ``rows``, evenly spread over their sorted IDs (so over
    the speakers and chapters of a split whose IDs start with them); all of them when ``limit``
    is None or not smaller.

    Arguments
    ---------
    rows : dict
        ``{utterance ID: row}``, as ``speechbrain.dataio.dataio.load_data_csv`` returns.
    limit : int or None
        How many to keep.

    Returns
    -------
    dict
        The kept rows, in their original order.

    Example
    -------
    >>> rows = {f"{spk}-1-{i}": {} for spk in (10, 11) for i in range(4)}
    >>> list(spread_subset(rows, 4))
    ['10-1-0', '10-1-2', '11-1-0', '11-1-2']
    """
    if not limit or len(rows) <= limit:
        return rows
    ids = sorted(rows)
    keep = {ids[i * len(ids) // limit] for i in range(limit)}
    logger.info("Keeping %d of %d utterances, spread over their sorted IDs", limit, len(ids))
    return {uid: row for uid, row in rows.items() if uid in keep}

