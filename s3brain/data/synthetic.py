"""The embedded synthetic speech corpus: real espeak-ng speech in the real corpora's layouts.

``generate(root)`` writes, under ``root``:

* ``LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` with
  ``<spk>-<chapter>.trans.txt`` (upper case), for the splits ``train-10m``, ``train-1h`` (which
  contains ``train-10m``, as in Libri-light), ``train-pool`` (a larger pool meant as unlabelled
  audio; transcripts are written anyway), ``dev-clean``, ``test-clean`` and ``test-other``.
  ``test-other`` is spoken by voice variants, speeds and pitches never used in training.
* ``CommonVoice/<lang>/clips/*.mp3`` with ``train.tsv``, ``dev.tsv`` and ``test.tsv`` in the
  CommonVoice columns, plus a ``phonemes`` column (IPA from espeak-ng, space separated).

The sizes ``default`` and ``tiny`` speak sentences of the closed grammar of
``s3brain.data.lexicon`` (386 English words). The sizes ``realtext`` and ``realtext-tiny`` write
only the LibriSpeech part and speak real English: the usage examples of WordNet 3.0
(``s3brain.data.realtext``; WordNet 3.0 licence, Princeton University), shuffled with the seed and
cut into disjoint splits, so that no dev or test sentence is ever a training sentence. ``realtext``
has 1,000 utterances in each of dev-clean, test-clean and test-other, about 6,400 distinct words
in their text and 11,700 in the whole corpus; train-10m and train-1h last about as long as the
default's (11 and 62 minutes). The WordNet sentences that no split speaks (about 26,000) are
written to ``LibriSpeech/librispeech-lm-norm.txt``, one per line, as LibriSpeech's LM text corpus
comes beside its audio: the recipes' n-gram LM is estimated from it and the training transcripts
(``lm_text_files(seed, size)``, the recipes' ``lm_text_files``), so it never sees an evaluation
sentence (6.7% of the test-clean words are not in it; 17.7% from the training transcripts alone).

Speakers are espeak-ng voice variants at a given pitch and speed. Everything is drawn from
``random.Random(seed)``: the same seed gives the same corpus, another seed other speakers and
sentences. Finished parts are marked and skipped, so a second call returns at once.

The default location is ``$S3BRAIN_DATA`` if set, else ``~/.cache/s3brain/corpus``; to move a
corpus, move the folder and set ``S3BRAIN_DATA`` (or pass ``--data_folder`` to a recipe).

Command line: ``python -m s3brain.data.synthetic [--root DIR] [--seed 0] [--size default]``.

Example
-------
>>> spec = corpus_spec(seed=0, size="tiny")
>>> sorted(spec["librispeech"])[:3]
['dev-clean', 'test-clean', 'test-other']
>>> jobs = plan_jobs(spec)
>>> other = {j["voice"] for j in jobs if j["split"] == "test-other"}
>>> train = {j["voice"] for j in jobs if j["split"].startswith("train")}
>>> other & train
set()
"""

import argparse
import concurrent.futures
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from s3brain.data import realtext
from s3brain.data.lexicon import SentenceGrammar

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SAMPLE_RATE = 16000
#: the text-only LM sentences of a WordNet corpus, named as LibriSpeech's (openslr.org/11)
LM_TEXT_NAME = "librispeech-lm-norm.txt"
# CommonVoice ships 48 kHz mp3 clips; the synthetic ones are written the same way, so that the
# default path itself goes through the recipes' resampling. Part of the CommonVoice parts'
# fingerprint (corpora written before at 16 kHz are rewritten once).
COMMONVOICE_RATE = 48000

# Voice variants heard in training; test-other uses the held-out ones.
TRAIN_VOICES = """m1 m2 m3 m4 m5 m6 f1 f2 f3 f4 klatt klatt2 klatt3 john edward linda steph
    david paul robert michel max""".split()
HELD_OUT_VOICES = "m7 m8 f5 klatt4 iven2 Annie Andy norbert".split()
TRAIN_PITCH, TRAIN_SPEED = (30, 70), (140, 180)  # espeak-ng -p (0-99) and -s (words per minute)
OTHER_PITCH, OTHER_SPEED = ((10, 24), (76, 90)), ((110, 128), (192, 210))

SIZES = {
    # utterances per split; utterances per speaker
    "default": {
        "librispeech": {"train-10m": 180, "train-1h": 1040, "train-pool": 2400,
                        "dev-clean": 200, "test-clean": 200, "test-other": 200},
        "commonvoice": {"langs": ["en", "de", "nl", "es", "it", "fr"],
                        "train": 300, "dev": 60, "test": 100},
        "per_speaker": 20,
    },
    "tiny": {
        "librispeech": {"train-10m": 16, "train-1h": 32, "train-pool": 32,
                        "dev-clean": 8, "test-clean": 8, "test-other": 8},
        "commonvoice": {"langs": ["en", "de", "nl", "es"], "train": 12, "dev": 4, "test": 4},
        "per_speaker": 4,
    },
    # WordNet's example sentences (s3brain.data.realtext), LibriSpeech only. They are shorter than
    # the grammar's (2.7 s against 3.6 s on average): the training splits hold more of them, to
    # last as long as the default's.
    "realtext": {
        "librispeech": {"train-10m": 260, "train-1h": 1420, "train-pool": 3180,
                        "dev-clean": 1000, "test-clean": 1000, "test-other": 1000},
        "text": "wordnet",
        "per_speaker": 20,
    },
    "realtext-tiny": {
        "librispeech": {"train-10m": 8, "train-1h": 16, "train-pool": 8,
                        "dev-clean": 4, "test-clean": 4, "test-other": 4},
        "text": "wordnet",
        "per_speaker": 4,
    },
}


def default_root():
    """Where corpora go by default: ``$S3BRAIN_DATA`` or ``~/.cache/s3brain/corpus``."""
    env = os.environ.get("S3BRAIN_DATA")
    return Path(env) if env else Path.home() / ".cache" / "s3brain" / "corpus"


def corpus_dir(seed=0, size="default", root=None):
    """The folder of the corpus with this seed and size."""
    return Path(root or default_root()) / f"{size}-seed{seed}"


def lm_text_files(seed=0, size="default", root=None):
    """The corpus's text-only LM sentences (``[<corpus>/LibriSpeech/librispeech-lm-norm.txt]``
    for the WordNet sizes, written by ``generate``), or ``[]`` for the grammar sizes, whose LM
    text is the training transcripts alone."""
    if SIZES.get(size, {}).get("text") != "wordnet":
        return []
    return [corpus_dir(seed, size, root) / "LibriSpeech" / LM_TEXT_NAME]


def corpus_spec(seed=0, size="default"):
    """Everything that determines the corpus; its hash names the finished marks.

    For the WordNet sizes that includes a hash of the usable sentences, so another WordNet text
    makes another corpus.
    """
    if size not in SIZES:
        raise ValueError(f"Unknown corpus size {size!r}; choose from {sorted(SIZES)}")
    spec = {"version": FORMAT_VERSION, "seed": seed, "size": size, **SIZES[size]}
    if spec.get("text") == "wordnet":
        text = "\n".join(s.transcript for s in realtext.sentences())
        spec["text_sha1"] = hashlib.sha1(text.encode()).hexdigest()
    return spec


def _speaker(rng, split, index, lang="en"):
    other = split == "test-other"
    voice = rng.choice(HELD_OUT_VOICES if other else TRAIN_VOICES)
    if other:
        pitch = rng.randint(*rng.choice(OTHER_PITCH))
        speed = rng.randint(*rng.choice(OTHER_SPEED))
    else:
        pitch, speed = rng.randint(*TRAIN_PITCH), rng.randint(*TRAIN_SPEED)
    return {"voice": voice, "pitch": pitch, "speed": speed, "lang": lang,
            "gap": rng.randint(0, 4), "index": index}


def _librispeech_utterances(rng, texts, split, first_speaker, per_spk):
    """Speaker, chapter, utterance ID and speed for each text, ``per_spk`` texts a speaker."""
    for i, text in enumerate(texts):
        if i % per_spk == 0:
            spk = _speaker(rng, split, first_speaker + i // per_spk)
            chapter = 10 * spk["index"] + rng.randint(1, 9)
        uid = f"{spk['index']}-{chapter}-{i % per_spk:04d}"
        yield {**spk, "id": uid, "text": text, "speed": spk["speed"] + rng.randint(-4, 4),
               "folder": f"{spk['index']}/{chapter}"}


def plan_jobs(spec):
    """One dict per utterance to synthesise: text, voice settings and output path (relative).

    With WordNet text (``spec["text"]``) a job also has ``speak``, the sentence in its original
    case for espeak-ng (which spells upper-case words such as ``US`` letter by letter).
    """
    rng = random.Random(spec["seed"])
    per_spk = spec["per_speaker"]
    jobs, used = [], set()
    grammar = SentenceGrammar.for_language("en")
    if spec.get("text") == "wordnet":
        # the seed shuffles the sentences once; each split takes the next ones, so no two share one
        unused = realtext.sentences()
        rng.shuffle(unused)

    def utterances(split, count, first_speaker):
        """``count`` LibriSpeech utterances of sentences no earlier split used."""
        if spec.get("text") == "wordnet":
            if count > len(unused):
                raise RuntimeError(f"WordNet gave too few sentences for {split}: {len(unused)} left"
                                   f" of the {count} needed")
            chosen = [unused.pop() for _ in range(count)]
            spoken = {s.transcript: s.spoken for s in chosen}
            texts = [s.transcript for s in chosen]
            return [{**utt, "speak": spoken[utt["text"]]} for utt in
                    _librispeech_utterances(rng, texts, split, first_speaker, per_spk)]
        texts = grammar.sentences(count, rng, exclude=used)
        used.update(texts)
        return list(_librispeech_utterances(rng, texts, split, first_speaker, per_spk))

    def job(utt, split):
        """The synthesis job of one utterance in ``split``, with its path in the corpus."""
        path = f"LibriSpeech/{split}/{utt['folder']}/{utt['id']}.flac"
        return {**{k: v for k, v in utt.items() if k != "folder"}, "split": split, "path": path}

    # Evaluation sentences first, so that training never sees them.
    first_speaker = {"test-other": 8000, "test-clean": 7000, "dev-clean": 6000,
                     "train-pool": 3000, "train-1h": 100}
    sizes = dict(spec["librispeech"])
    sizes["train-1h"] -= sizes["train-10m"]
    for split, first in first_speaker.items():
        jobs += [job(u, split) for u in utterances(split, sizes[split], first)]
    # train-10m is the first speakers' share of train-1h, as in Libri-light.
    for utt in utterances("train-10m", sizes["train-10m"], 10):
        jobs += [job(utt, "train-10m"), job(utt, "train-1h")]

    cv = spec.get("commonvoice", {"langs": []})
    for lang in cv["langs"]:
        grammar = SentenceGrammar.for_language(lang)
        lang_used = set()
        for split in ("test", "dev", "train"):
            texts = grammar.sentences(cv[split], rng, exclude=lang_used)
            lang_used.update(texts)
            for i, text in enumerate(texts):
                if i % per_spk == 0:
                    spk = _speaker(rng, split, i // per_spk, lang)
                    client = hashlib.sha1(f"{lang}{split}{i}{spk}".encode()).hexdigest()
                uid = f"common_voice_{lang}_{split}_{i:05d}"
                jobs.append({**spk, "split": f"cv-{lang}-{split}", "id": uid, "text": text,
                             "client_id": client, "path": f"CommonVoice/{lang}/clips/{uid}.mp3",
                             "rate": COMMONVOICE_RATE})
    return jobs


def synthesize(job, root):
    """Speak one job with espeak-ng, resample with sox to the job's ``rate`` (16 kHz unless
    given), write it.

    Returns its length in seconds and, for CommonVoice jobs, its IPA phonemes (else None).
    """
    voice = f"{job['lang']}+{job['voice']}"
    speak = ["espeak-ng", "-v", voice, "-s", str(job["speed"]), "-p", str(job["pitch"]),
             "-g", str(job["gap"]), "-a", str(job.get("amplitude", 100)), "--stdout",
             job.get("speak", job["text"])]
    rate = job.get("rate", SAMPLE_RATE)
    # -R: sox's dither draws the same numbers on every run, so a job always gives the same bytes
    resample = ["sox", "-R", "-t", "wav", "-", "-t", "wav", "-r", str(rate), "-c", "1", "-b", "16",
                "-"]
    tts = subprocess.run(speak, capture_output=True, check=True)
    wav = subprocess.run(resample, input=tts.stdout, capture_output=True, check=True)
    audio, rate = sf.read(io.BytesIO(wav.stdout), dtype="int16")
    audio = _trim_silence(audio, keep=rate // 10)
    if job.get("pad_to"):  # fixed-length clips (Speech Commands: 1 s), centred
        audio = _fit_length(audio, int(job["pad_to"] * rate))
    out = Path(root) / job["path"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".part" + out.suffix)
    sf.write(tmp, audio, rate, format=out.suffix[1:].upper())
    os.replace(tmp, out)
    phonemes = phonemize(job["text"], job["lang"]) if job["split"].startswith("cv-") else None
    return len(audio) / rate, phonemes




def _fit_length(audio, samples):
    """Centre ``audio`` in ``samples`` samples of silence, or cut its middle ``samples``."""
    if len(audio) >= samples:
        start = (len(audio) - samples) // 2
        return audio[start:start + samples]
    out = np.zeros(samples, dtype=audio.dtype)
    start = (samples - len(audio)) // 2
    out[start:start + len(audio)] = audio
    return out


def _trim_silence(audio, keep):
    """Cut leading and trailing silence beyond 0.1 s (espeak-ng pads both ends)."""
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 200)
    if len(loud) == 0:
        return audio
    return audio[max(0, loud[0] - keep): loud[-1] + keep]


def phonemize(text, lang):
    """IPA phonemes of ``text`` from espeak-ng, space separated, stress marks removed.

    Example
    -------
    >>> phonemize("hallo", "nl").split()[0]
    'h'
    """
    out = subprocess.run(["espeak-ng", "-q", "--ipa", "--sep=_", "-v", lang, text],
                         capture_output=True, text=True, check=True).stdout
    phones = []
    for word in out.replace("\n", " ").split():
        phones += [p for p in word.replace("ˈ", "").replace("ˌ", "").split("_") if p]
    return " ".join(phones)


def _check_tools():
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"The synthetic corpus needs {' and '.join(missing)} on the PATH. On Debian/Ubuntu: "
            "apt-get install espeak-ng sox (the README's commands do this for you).")


def unspoken_sentences(jobs):
    """The WordNet transcripts that none of ``jobs`` speaks, in WordNet's order, once each."""
    spoken = {j["text"] for j in jobs}
    return [t for t in dict.fromkeys(s.transcript for s in realtext.sentences()) if t not in spoken]


def _write_lm_text(path, jobs):
    """Write a WordNet corpus's LM text file to ``path`` (the unspoken sentences), if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text("".join(f"{t}\n" for t in unspoken_sentences(jobs)), encoding="utf-8")
        os.replace(partial, path)


def _mark(root, part):
    return Path(root) / ".done" / part


def generate(root=None, seed=0, size="default", workers=None, progress=True):
    """Write the corpus (skipping finished parts) and return its folder.

    Arguments
    ---------
    root : str or Path, optional
        Folder that holds corpora; the corpus goes to ``root/<size>-seed<seed>``.
    seed : int
        Seed of speakers and sentences.
    size : str
        ``"default"`` (about 1.3 h labelled, 2 h pool, 6 languages), ``"tiny"`` (tests),
        ``"realtext"`` (WordNet's sentences, 1,000 utterances per evaluation split, LibriSpeech
        only) or ``"realtext-tiny"`` (tests).
    workers : int, optional
        Processes for synthesis (default: all cores).
    progress : bool
        Show a progress bar.

    Returns
    -------
    Path
        The corpus folder, holding ``LibriSpeech/`` and ``CommonVoice/``.
    """
    spec = corpus_spec(seed, size)
    out = corpus_dir(seed, size, root)
    fingerprint = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    jobs = plan_jobs(spec)
    parts = sorted({j["split"] for j in jobs})

    def todo_parts():
        """The corpus parts not written yet (or written by another version of the plan)."""
        return [p for p in parts if not _is_done(out, p, _part_fingerprint(fingerprint, p))]

    lm_text = lm_text_files(seed, size, root)
    if not todo_parts() and all(p.exists() for p in lm_text):
        return out
    with generation_lock(out):  # one writer; the others wait, then find the parts done
        todo = todo_parts()
        if todo:
            for path in lm_text:  # written from the plan: rewritten with any part
                path.unlink(missing_ok=True)
            _generate_parts(out, jobs, todo, fingerprint, workers, progress)
        for path in lm_text:
            _write_lm_text(path, jobs)
    return out


@contextlib.contextmanager
def generation_lock(folder):
    """Hold an exclusive lock on ``folder`` (a file beside it) while generating into it: two
    processes (test workers, DDP ranks) asking for the same corpus must not write it both."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _generate_parts(out, jobs, todo, fingerprint, workers, progress):
    """Synthesise the parts ``todo`` of the corpus in ``out`` and mark each one done."""
    _check_tools()
    for part in todo:
        _clear_part(out, part)
    pending = [j for j in jobs if j["split"] in todo]
    logger.info("Synthesising %d utterances into %s", len(pending), out)
    durations, phonemes = {}, {}
    workers = workers or os.cpu_count() or 1
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        results = pool.map(synthesize, pending, [out] * len(pending), chunksize=16)
        bar = tqdm(results, total=len(pending), desc=f"synthetic corpus {out.name}",
                   disable=not progress, unit="utt")
        for job, (duration, phones) in zip(pending, bar):
            durations[job["path"]] = duration
            phonemes[job["path"]] = phones
    for part in todo:
        part_jobs = [j for j in jobs if j["split"] == part]
        if part.startswith("cv-"):
            _write_commonvoice_tsv(out, part, part_jobs, phonemes)
        else:
            _write_librispeech_trans(out, part_jobs)
        mark = _mark(out, part)
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.write_text(json.dumps({"fingerprint": _part_fingerprint(fingerprint, part),
                                    "utterances": len(part_jobs),
                                    "seconds": round(sum(durations[j["path"]] for j in part_jobs), 2)}))


def _part_fingerprint(fingerprint, part):
    """The corpus fingerprint, with the clip rate for CommonVoice parts."""
    if part.startswith("cv-"):
        return hashlib.sha1(f"{fingerprint}-{COMMONVOICE_RATE}Hz".encode()).hexdigest()
    return fingerprint


def _clear_part(out, part):
    """Remove what an earlier, different or unfinished generation left of ``part``."""
    _mark(out, part).unlink(missing_ok=True)
    if part.startswith("cv-"):
        _, lang, split = part.split("-")
        (out / "CommonVoice" / lang / f"{split}.tsv").unlink(missing_ok=True)
        for clip in (out / "CommonVoice" / lang / "clips").glob(f"common_voice_{lang}_{split}_*"):
            clip.unlink()
    else:
        shutil.rmtree(out / "LibriSpeech" / part, ignore_errors=True)


def _is_done(out, part, fingerprint):
    mark = _mark(out, part)
    try:
        return json.loads(mark.read_text())["fingerprint"] == fingerprint
    except (OSError, ValueError, KeyError):
        return False


def _write_librispeech_trans(out, jobs):
    chapters = {}
    for job in jobs:
        chapters.setdefault(Path(job["path"]).parent, []).append(job)
    for folder, chapter_jobs in chapters.items():
        spk, chapter = folder.parent.name, folder.name
        lines = [f"{j['id']} {j['text']}\n" for j in sorted(chapter_jobs, key=lambda j: j["id"])]
        (out / folder / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))


CV_COLUMNS = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
              "down_votes", "age", "gender", "accents", "variant", "locale", "segment", "phonemes"]


def _write_commonvoice_tsv(out, part, jobs, phonemes):
    _, lang, split = part.split("-")
    rows = []
    for job in jobs:
        gender = "female_feminine" if job["voice"].startswith("f") else "male_masculine"
        rows.append({"client_id": job["client_id"], "path": Path(job["path"]).name,
                     "sentence_id": hashlib.sha1(job["text"].encode()).hexdigest()[:16],
                     "sentence": job["text"], "sentence_domain": "", "up_votes": 2,
                     "down_votes": 0, "age": "", "gender": gender, "accents": "", "variant": "",
                     "locale": lang, "segment": "", "phonemes": phonemes[job["path"]]})
    with open(out / "CommonVoice" / lang / f"{split}.tsv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, CV_COLUMNS, delimiter="\t", quoting=csv.QUOTE_NONE,
                                escapechar="\\")
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None):
    """Command line: write the corpus (``generate``) and print its folder.

    Arguments
    ---------
    argv : list of str, optional
        ``--root FOLDER --seed N --size NAME --workers N``; ``sys.argv[1:]`` when None.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="folder of corpora (default: $S3BRAIN_DATA "
                        "or ~/.cache/s3brain/corpus)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="default", choices=sorted(SIZES))
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(generate(args.root, args.seed, args.size, args.workers))


if __name__ == "__main__":
    sys.exit(main())
