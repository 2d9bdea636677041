"""Data preparation for Common Voice, with IPA phoneme targets for phoneme recognition.

Reads the real corpus layout of one language::

    <data_folder>/<locale>/{train,dev,test}.tsv     (tab-separated, Common Voice columns)
    <data_folder>/<locale>/clips/<path>              (mp3)

(``data_folder`` may also be the locale folder itself) and writes one SpeechBrain CSV manifest
per split with the columns ``ID,duration,wav,spk_id,wrd,phn``. ``phn`` is the space-separated
IPA of the sentence: taken from a ``phonemes`` column when the tsv has one (the embedded
synthetic corpus), else made with espeak-ng (the voice of the locale, see ``ESPEAK_VOICES``).
Durations come from ``clip_durations.tsv`` when present, else from the audio header. Clips that
are missing or unreadable, and rows with an empty sentence, are reported and left out.

Example
-------
>>> import tempfile
>>> from s3brain.data.synthetic import generate
>>> corpus = generate(size="tiny", progress=False)
>>> with tempfile.TemporaryDirectory() as out:
...     manifests = prepare_common_voice(corpus / "CommonVoice", out, "nl", splits=["dev"])
...     rows = read_manifest(manifests["dev"])
>>> sorted(rows[0])
['ID', 'duration', 'phn', 'spk_id', 'wav', 'wrd']
"""

import concurrent.futures
import csv
import json
import logging
import os
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from s3brain.data.synthetic import phonemize

logger = logging.getLogger(__name__)

LAYOUT = "<data_folder>/<locale>/<split>.tsv with the clips in <data_folder>/<locale>/clips/"
COLUMNS = ["ID", "duration", "wav", "spk_id", "wrd", "phn"]
#: Common Voice locale -> espeak-ng voice, where the two differ.
ESPEAK_VOICES = {"zh-CN": "cmn", "zh-TW": "cmn", "zh-HK": "yue", "sv-SE": "sv", "pt": "pt",
                 "es": "es", "fy-NL": "fy", "ga-IE": "ga", "hy-AM": "hy", "nn-NO": "nn",
                 "pa-IN": "pa", "rm-sursilv": "rm", "ne-NP": "ne"}


def espeak_voice(locale):
    """The espeak-ng voice that phonemizes a Common Voice locale.

    Arguments
    ---------
    locale : str
        A Common Voice locale (``de``, ``sv-SE``, ``zh-CN``, ...).

    Returns
    -------
    voice : str
        The voice of ``ESPEAK_VOICES`` where the names differ, else the locale's language part.

    Example
    -------
    >>> espeak_voice("sv-SE"), espeak_voice("de"), espeak_voice("en-GB")
    ('sv', 'de', 'en')
    """
    return ESPEAK_VOICES.get(locale, locale.split("-")[0])


def find_locale_folder(data_folder, locale, splits):
    """The folder holding ``<split>.tsv`` and ``clips/``: ``data_folder/<locale>`` or itself."""
    data_folder = Path(data_folder)
    for candidate in (data_folder / locale, data_folder):
        if all((candidate / f"{s}.tsv").is_file() for s in splits):
            return candidate
    if not data_folder.is_dir():
        raise FileNotFoundError(f"Common Voice folder {data_folder} does not exist. Expected {LAYOUT}.")
    raise FileNotFoundError(f"No {[f'{s}.tsv' for s in splits]} for locale {locale!r} in "
                            f"{data_folder} or {data_folder / locale}. Expected {LAYOUT}.")


def read_tsv(path):
    """The rows of a Common Voice tsv file, as dicts keyed by its header.

    Quotes are ordinary characters in these files (a sentence may hold one), not CSV quoting.

    Arguments
    ---------
    path : str or Path
        The tsv file.

    Returns
    -------
    rows : list of dict
    """
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def clip_durations(folder):
    """``{clip path: seconds}`` from ``clip_durations.tsv`` (newer releases), or ``{}``."""
    path = folder / "clip_durations.tsv"
    if not path.exists():
        return {}
    return {row["clip"]: float(row["duration[ms]"]) / 1000 for row in read_tsv(path)}


def read_split(folder, split, locale, workers=None):
    """Manifest rows of one split and ``(ID, reason)`` for the rows left out."""
    known = clip_durations(folder)
    rows, skipped, to_phonemize = [], [], []
    for entry in read_tsv(folder / f"{split}.tsv"):
        uid = Path(entry["path"]).stem
        wav = folder / "clips" / entry["path"]
        sentence = " ".join(entry.get("sentence", "").split())
        if not sentence:
            skipped.append((uid, "empty sentence"))
            continue
        duration = known.get(entry["path"])
        if duration is None:
            try:
                duration = sf.info(str(wav)).duration
            except (RuntimeError, OSError) as err:
                skipped.append((uid, f"unreadable audio {wav}: {err}"))
                continue
        if duration <= 0:
            skipped.append((uid, f"empty audio {wav}"))
            continue
        row = {"ID": uid, "duration": round(duration, 4), "wav": str(wav),
               "spk_id": entry.get("client_id", ""), "wrd": sentence,
               "phn": " ".join(entry.get("phonemes", "").split())}
        if not row["phn"]:
            to_phonemize.append(row)
        rows.append(row)
    if to_phonemize:
        voice = espeak_voice(locale)
        with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
            phones = pool.map(phonemize, [r["wrd"] for r in to_phonemize],
                              [voice] * len(to_phonemize))
            for row, phn in tqdm(zip(to_phonemize, phones), total=len(to_phonemize),
                                 desc=f"espeak-ng {voice} {split}"):
                row["phn"] = phn
    return rows, skipped


def write_csv(rows, path):
    """Write a manifest with the ``COLUMNS`` header; it appears at ``path`` only once complete.

    Arguments
    ---------
    rows : list of dict
        Manifest rows with the keys of ``COLUMNS``.
    path : str or Path
        The CSV file to write (written to ``<path>.tmp`` first, then renamed).
    """
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_manifest(path):
    """The rows of a manifest written by ``write_csv``.

    Arguments
    ---------
    path : str or Path
        The CSV file.

    Returns
    -------
    rows : list of dict
        One dict per utterance, keyed by ``COLUMNS`` (all values strings).
    """
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def prepare_common_voice(data_folder, save_folder, locale, splits=("train", "dev", "test"),
                         skip_prep=False):
    """Write ``<split>.csv`` for every split of ``locale`` in ``save_folder``.

    Returns
    -------
    dict
        Manifest path per split.
    """
    save_folder = Path(save_folder)
    splits = list(splits)
    manifests = {s: save_folder / f"{s}.csv" for s in splits}
    if skip_prep:
        return manifests
    folder = find_locale_folder(data_folder, locale, splits)
    save_folder.mkdir(parents=True, exist_ok=True)
    options = {"folder": str(folder.resolve()), "locale": locale, "splits": splits, "version": 1}
    opt_file = save_folder / "prepare_options.json"
    if opt_file.exists() and json.loads(opt_file.read_text()) == options and all(
            p.exists() for p in manifests.values()):
        logger.info("Manifests in %s are up to date; skipping preparation.", save_folder)
        return manifests
    for split in splits:
        rows, skipped = read_split(folder, split, locale)
        for uid, reason in skipped:
            logger.warning("Skipping %s: %s", uid, reason)
        write_csv(rows, manifests[split])
        logger.info("%s %s: %d clips, %.1f min (%d skipped)", locale, split, len(rows),
                    sum(r["duration"] for r in rows) / 60, len(skipped))
    opt_file.write_text(json.dumps(options))
    return manifests
