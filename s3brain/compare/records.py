"""Result records: what a finished run leaves in the repository so that its tables, plots and
intervals can be made again without training.

A record of a run is a folder with the run's ``results.json`` (absolute paths made portable,
``s3brain.utils.provenance.portable_values``) and ``utterance_errors.tsv.gz``: for every
per-utterance file the run wrote (SpeechBrain's ``wer_<split>.txt`` / ``per_<split>.txt`` from
``ErrorRateStats.write_stats``, a classifier's ``predictions_<split>.csv``), one line per
utterance with its errors and its length, which is all the paired intervals need
(``s3brain.compare.stats``), at about a twentieth of the files' size. The statistics read a
record folder as they read a run folder: ``stats.utterance_errors`` and
``stats.prediction_errors`` fall back to the record when the original file is not there.

A comparison's records mirror its output folder (``<records>/seed<s>/<strategy>/``), so that
``python -m s3brain.compare <recipe> ... --from-records <records>`` makes its tables from them
exactly as from the runs.

Example
-------
>>> import tempfile
>>> run, rec = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp()) / "r"
>>> _ = (run / "results.json").write_text('{"wer_test_clean": 50.0}')
>>> _ = (run / "wer_test-clean.txt").write_text(
...     "u1, %WER 50.00 [ 1 / 2, 0 ins, 0 del, 1 sub ]\\nu2, %WER 0.00 [ 0 / 3, 0 ins, 0 del, 0 sub ]\\n")
>>> write_record(run, rec)
['results.json', 'utterance_errors.tsv.gz']
>>> read_errors(rec)
{'wer_test-clean': {'u1': (1, 2), 'u2': (0, 3)}}
"""

import csv
import gzip
import io
import json
import os
import re
import shutil
from pathlib import Path

from s3brain.utils.provenance import REPO, portable_values

ERRORS_FILE = "utterance_errors.tsv.gz"
_UTTERANCE = re.compile(r"^(\S+), %[A-Z]+ [-0-9.]+ \[ (\d+) / (\d+),")
#: Per-utterance files a run writes, by pattern: error-rate alignments and classifier predictions.
ERROR_PATTERNS = ("wer_*.txt", "per_*.txt", "cer_*.txt")
PREDICTION_PATTERN = "predictions_*.csv"


def alignment_errors(path):
    """``{ID: (errors, length)}`` from the ALIGNMENTS lines of ``ErrorRateStats.write_stats``'s
    file (empty when it has none)."""
    found = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = _UTTERANCE.match(line)
            if match:
                found[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    return found


def prediction_rows(path):
    """``{ID: (wrong, 1)}``: wrong when any target's prediction differs from the truth."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    targets = [c[:-len("_predicted")] for c in (rows[0] if rows else {})
               if c.endswith("_predicted")]
    return {row["ID"]: (int(any(row[f"{t}_predicted"] != row[f"{t}_true"] for t in targets)), 1)
            for row in rows}


def run_errors(folder):
    """Every per-utterance file of a run folder as ``{file stem: {ID: (errors, length)}}``."""
    folder = Path(folder)
    found = {}
    for pattern in ERROR_PATTERNS:
        for path in sorted(folder.glob(pattern)):
            errors = alignment_errors(path)
            if errors:
                found[path.stem] = errors
    for path in sorted(folder.glob(PREDICTION_PATTERN)):
        found[path.stem] = prediction_rows(path)
    return found


def write_record(run, record, repo=None):
    """Write the record of the run folder ``run`` into the folder ``record``.

    Arguments
    ---------
    run : str or Path
        A finished run's folder (holds ``results.json``).
    record : str or Path
        Where the record goes (created; its earlier files replaced).
    repo : Path, optional
        Paths inside it are written relative to it, others as ``.../<parent>/<name>``
        (default: this repository).

    Returns
    -------
    list of str
        The files written.
    """
    run, record = Path(run), Path(record)
    repo = Path(repo) if repo else REPO
    if not (run / "results.json").is_file():
        raise FileNotFoundError(f"{run} has no results.json: not a finished run")
    if record.exists():
        shutil.rmtree(record)
    record.mkdir(parents=True)
    results = portable_values(json.loads((run / "results.json").read_text()), repo)
    (record / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    written = ["results.json"]
    errors = run_errors(run)
    if errors:
        text = io.StringIO()
        for stem, rows in errors.items():
            for uid, (wrong, length) in rows.items():
                text.write(f"{stem}\t{uid}\t{wrong}\t{length}\n")
        # mtime=0: the same errors give the same bytes, so rewriting a record changes nothing
        with open(record / ERRORS_FILE, "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            f.write(text.getvalue().encode("utf-8"))
        written.append(ERRORS_FILE)
    return written


def read_errors(record):
    """``{file stem: {ID: (errors, length)}}`` of a record folder (empty if it has none)."""
    path = Path(record) / ERRORS_FILE
    if not path.is_file():
        return {}
    found = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            stem, uid, wrong, length = line.rstrip("\n").split("\t")
            found.setdefault(stem, {})[uid] = (int(wrong), int(length))
    return found


def recorded_errors(path):
    """The per-utterance errors of the file ``path`` from the record in its folder, or None
    when the folder holds no record of it."""
    path = Path(path)
    return read_errors(path.parent).get(path.stem)


def scored(path):
    """Whether the per-utterance file ``path`` is there, as a file or in its folder's record."""
    return Path(path).is_file() or recorded_errors(path) is not None


def recorded_stems(folder):
    """The per-utterance files (stems) a record folder holds."""
    return list(read_errors(folder))


def record_comparison(out, records, repo=None):
    """Write the records of every finished run under a comparison's output folder ``out``
    (``seed<s>/<strategy>/``, or ``<strategy>/`` without seeds; SALAD detectors included),
    in the same layout under ``records``; a run folder linked into ``out`` (a run another
    comparison shares) is followed.

    Returns
    -------
    list of Path
        The record folders written.
    """
    out, records = Path(out), Path(records)
    written = []
    found = [Path(folder) / "results.json"  # run folders linked in (shared runs) count too
             for folder, _, files in os.walk(out, followlinks=True) if "results.json" in files]
    for results in sorted(found):
        relative = results.parent.relative_to(out)
        if any(part.startswith(("save", "CKPT")) for part in relative.parts):
            continue
        write_record(results.parent, records / relative, repo)
        written.append(records / relative)
    return written


def size_of(folder):
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
