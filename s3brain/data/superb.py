"""Synthetic SUPERB-like task data, spoken by espeak-ng, in the real datasets' layouts.

All of it is synthetic: espeak-ng voice variants at chosen pitches and speeds stand for people.
``generate_superb(seed, size)`` writes, under ``<corpus>/SUPERB/``:

* ``speech_commands/``: Speech Commands v0.02 layout: a folder per word with
  ``<speaker>_nohash_<n>.wav`` (1 s, 16 kHz), ``_background_noise_/`` (noise recordings, from
  which the ``_silence_`` class is cut), ``validation_list.txt`` and ``testing_list.txt``. The
  10 SUPERB keywords and 10 auxiliary words (``_unknown_``).
* ``voxceleb1/``: VoxCeleb1 identification layout: ``wav/<id1xxxx>/<video>/<nnnnn>.wav`` and
  ``iden_split.txt`` (``1``/``2``/``3`` = train/dev/test per line); a speaker is a voice variant
  with its own pitch and speed.
* ``fluent_speech_commands/``: Fluent Speech Commands layout: ``wavs/speakers/<spk>/<id>.wav`` and
  ``data/{train,valid,test}_data.csv`` with ``path,speakerId,transcription,action,object,location``;
  speakers differ between splits, as in the real set.
* ``prosody/``: a paralinguistic task of our own (no public layout to follow): the same sentences
  spoken in four prosody classes (``neutral``, ``high`` pitch, ``low_slow_quiet``,
  ``fast_loud``) relative to each speaker's own pitch, speed and loudness;
  ``<split>/<class>/<speaker>_<n>.wav``, speakers differ between splits.

Finished tasks are marked and skipped. Command line: ``python -m s3brain.data.superb``.

Sizes (``SIZES``): ``default``; ``tiny`` (for tests); ``largetest``, ``default``'s training,
validation and test clips unchanged (same texts, voices, labels and file names for a seed) plus
about four times as many test clips again, drawn after all of ``default``'s from a generator of
their own (``superb-<seed>-extra-test``): 24 new test speakers for keyword spotting, 16 for
intent and 24 for prosody, and 13 more test clips of each of the 16 identification speakers
(closed-set), in sentences that speaker says nowhere else. Its test sets are 450 keyword clips
(and about 41 ``_silence_`` crops), 256 identification, 320 intent and 360 prosody clips,
against 90 (+8), 48, 64 and 72 for ``default``; the layout files list every test clip.

Example
-------
>>> jobs = plan_superb_jobs(seed=0, size="tiny")
>>> sorted({j["task"] for j in jobs})
['fluent_speech_commands', 'prosody', 'speech_commands', 'voxceleb1']
>>> sorted({j["label"] for j in jobs if j["task"] == "prosody"})
['fast_loud', 'high', 'low_slow_quiet', 'neutral']
>>> default = plan_superb_jobs(seed=0)
>>> plan_superb_jobs(seed=0, size="largetest")[:len(default)] == default
True
"""

import argparse
import concurrent.futures
import csv
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from s3brain.data.lexicon import SentenceGrammar
from s3brain.data.synthetic import (
    SAMPLE_RATE,
    TRAIN_VOICES,
    _check_tools,
    corpus_dir,
    generation_lock,
    synthesize,
)

KEYWORDS = "yes no up down left right on off stop go".split()
AUXILIARY = "zero one two three bed bird cat dog house tree".split()
PROSODY = {  # class: (pitch offset, speed offset, espeak amplitude)
    "neutral": (0, 0, 100), "high": (30, 0, 100), "low_slow_quiet": (-25, -45, 40),
    "fast_loud": (0, 55, 190)}
# Fluent Speech Commands' slots: (transcription, action, object, location)
FSC_COMMANDS = [
    ("turn on the lights", "activate", "lights", "none"),
    ("turn off the lights", "deactivate", "lights", "none"),
    ("switch on the lights in the kitchen", "activate", "lights", "kitchen"),
    ("switch off the lights in the kitchen", "deactivate", "lights", "kitchen"),
    ("turn on the bedroom lights", "activate", "lights", "bedroom"),
    ("turn off the bedroom lights", "deactivate", "lights", "bedroom"),
    ("lights on in the washroom", "activate", "lights", "washroom"),
    ("lights off in the washroom", "deactivate", "lights", "washroom"),
    ("turn the heat up", "increase", "heat", "none"),
    ("turn the heat down", "decrease", "heat", "none"),
    ("make it warmer in the kitchen", "increase", "heat", "kitchen"),
    ("make it cooler in the kitchen", "decrease", "heat", "kitchen"),
    ("increase the temperature in the bedroom", "increase", "heat", "bedroom"),
    ("decrease the temperature in the bedroom", "decrease", "heat", "bedroom"),
    ("more heat in the washroom", "increase", "heat", "washroom"),
    ("less heat in the washroom", "decrease", "heat", "washroom"),
    ("turn up the volume", "increase", "volume", "none"),
    ("turn down the volume", "decrease", "volume", "none"),
    ("play the music", "activate", "music", "none"),
    ("stop the music", "deactivate", "music", "none"),
    ("turn on the lamp", "activate", "lamp", "none"),
    ("turn off the lamp", "deactivate", "lamp", "none"),
    ("bring me the newspaper", "bring", "newspaper", "none"),
    ("bring me some juice", "bring", "juice", "none"),
    ("bring my socks", "bring", "socks", "none"),
    ("bring my shoes", "bring", "shoes", "none"),
    ("switch the language to chinese", "change language", "Chinese", "none"),
    ("switch the language to korean", "change language", "Korean", "none"),
    ("switch the language to english", "change language", "English", "none"),
    ("switch the language to german", "change language", "German", "none"),
    ("change the language", "change language", "none", "none"),
]

DEFAULT_SIZE = {
    # speakers per split and clips per speaker, per task
    "speech_commands": {"train": 24, "valid": 6, "test": 6, "aux_per_speaker": 5},
    "voxceleb1": {"speakers": 16, "train": 8, "dev": 2, "test": 3},
    "fluent_speech_commands": {"train": 16, "valid": 4, "test": 4, "per_speaker": 16},
    "prosody": {"train": 20, "valid": 6, "test": 6, "per_class": 3}}
SIZES = {
    "default": DEFAULT_SIZE,
    "tiny": {"speech_commands": {"train": 2, "valid": 1, "test": 1, "aux_per_speaker": 2},
             "voxceleb1": {"speakers": 3, "train": 2, "dev": 1, "test": 1},
             "fluent_speech_commands": {"train": 2, "valid": 1, "test": 1, "per_speaker": 4},
             "prosody": {"train": 2, "valid": 1, "test": 1, "per_class": 1}},
    # default, plus test clips drawn after all of default's (``_plan_extra_test``): new test
    # speakers for keyword spotting, intent and prosody; more clips of the same speakers for
    # identification, which is closed-set
    "largetest": {**DEFAULT_SIZE, "extra_test": {"speech_commands": 24, "voxceleb1": 13,
                                                  "fluent_speech_commands": 16, "prosody": 24}},
}
BACKGROUND_NOISES = ("white_noise", "pink_noise", "running_tap")


def _speaker(rng):
    """A synthetic person: voice variant, base pitch and speed."""
    return {"voice": rng.choice(TRAIN_VOICES), "pitch": rng.randint(35, 60),
            "speed": rng.randint(145, 175), "gap": rng.randint(0, 3), "lang": "en"}


def _speaker_hash(rng):
    return f"{rng.getrandbits(32):08x}"


def _new_speaker_hash(rng, taken):
    """A speaker hash not in ``taken`` (which it joins): extra speakers never reuse a name."""
    name = _speaker_hash(rng)
    while name in taken:
        name = _speaker_hash(rng)
    taken.add(name)
    return name


def _keyword_jobs(rng, spk, name, split, aux_per_speaker):
    """One Speech Commands speaker's clips: the keywords and some auxiliary words."""
    words = KEYWORDS + rng.sample(AUXILIARY, aux_per_speaker)
    return [{**spk, "task": "speech_commands", "split": split, "text": word, "label": word,
             "speaker": name, "pad_to": 1.0, "speed": spk["speed"] + rng.randint(-10, 10),
             "path": f"speech_commands/{word}/{name}_nohash_0.wav"} for word in words]


def _identification_job(seed, spk, spk_id, split, n, text, rng):
    """The ``n``-th VoxCeleb1 clip of ``spk_id`` in ``split``, a video of its own."""
    code = {"train": 1, "dev": 2, "test": 3}[split]
    video = hashlib.sha1(f"{seed}{spk_id}{split}{n}".encode()).hexdigest()[:11]
    return {**spk, "task": "voxceleb1", "split": split, "code": code, "text": text,
            "label": spk_id, "speaker": spk_id, "speed": spk["speed"] + rng.randint(-6, 6),
            "path": f"voxceleb1/wav/{spk_id}/{video}/{n + 1:05d}.wav"}


def _intent_jobs(rng, seed, spk, name, split, per_speaker):
    """One Fluent Speech Commands speaker's clips: ``per_speaker`` different commands."""
    jobs = []
    for text, action, obj, location in rng.sample(FSC_COMMANDS,
                                                  min(per_speaker, len(FSC_COMMANDS))):
        uid = hashlib.sha1(f"{seed}{name}{text}".encode()).hexdigest()[:16]
        jobs.append({**spk, "task": "fluent_speech_commands", "split": split, "text": text,
                     "label": f"{action}_{obj}_{location}", "action": action, "object": obj,
                     "location": location, "speaker": name,
                     "path": f"fluent_speech_commands/wavs/speakers/{name}/{uid}.wav"})
    return jobs


def _prosody_jobs(rng, grammar, spk, name, split, per_class):
    """One prosody speaker's clips: ``per_class`` sentences in each class."""
    jobs = []
    for label, (dp, ds, amplitude) in PROSODY.items():
        for _ in range(per_class):
            jobs.append({**spk, "task": "prosody", "split": split, "label": label,
                         "text": grammar.sentence(rng).lower(), "speaker": name,
                         "pitch": min(99, max(0, spk["pitch"] + dp)),
                         "speed": spk["speed"] + ds + rng.randint(-5, 5),
                         "amplitude": amplitude,
                         "path": f"prosody/{split}/{label}/{name}_{len(jobs):03d}.wav"})
    return jobs


def plan_superb_jobs(seed=0, size="default"):
    """One dict per clip to synthesise, with its task, split, label and relative path.

    Arguments
    ---------
    seed : int
        Seed of every random choice (voices, pitches, speeds, texts, names).
    size : str
        A key of ``SIZES``. ``largetest`` plans exactly ``default``'s jobs first, then its
        extra test clips from a generator of their own, so ``default``'s part is unchanged.

    Returns
    -------
    list of dict
        The clips, task by task, split by split.
    """
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r}; choose from {sorted(SIZES)}")
    spec = SIZES[size]
    rng = random.Random(f"superb-{seed}")
    grammar = SentenceGrammar.for_language("en")
    jobs = []

    sc = spec["speech_commands"]
    for split in ("train", "valid", "test"):
        for _ in range(sc[split]):
            spk, name = _speaker(rng), _speaker_hash(rng)
            jobs += _keyword_jobs(rng, spk, name, split, sc["aux_per_speaker"])

    vc = spec["voxceleb1"]
    identities = {}  # id -> voice, for extra test clips of the same speakers
    for s in range(vc["speakers"]):
        spk, spk_id = _speaker(rng), f"id1{s:04d}"
        identities[spk_id] = spk
        for split in ("train", "dev", "test"):
            for n in range(vc[split]):
                jobs.append(_identification_job(seed, spk, spk_id, split, n,
                                                grammar.sentence(rng).lower(), rng))

    fsc = spec["fluent_speech_commands"]
    for split in ("train", "valid", "test"):
        for _ in range(fsc[split]):
            spk, name = _speaker(rng), _speaker_hash(rng)
            jobs += _intent_jobs(rng, seed, spk, name, split, fsc["per_speaker"])

    pr = spec["prosody"]
    for split in ("train", "valid", "test"):
        for _ in range(pr[split]):
            spk, name = _speaker(rng), _speaker_hash(rng)
            jobs += _prosody_jobs(rng, grammar, spk, name, split, pr["per_class"])

    if "extra_test" in spec:
        jobs += _plan_extra_test(seed, spec, identities, jobs, grammar)
    return jobs


def _plan_extra_test(seed, spec, identities, jobs, grammar):
    """Test clips beyond the base plan ``jobs``, from a generator of their own.

    Keyword spotting, intent and prosody get ``spec["extra_test"][task]`` new test speakers,
    drawn like the base test speakers (names never reused). Identification stays closed-set:
    ``spec["extra_test"]["voxceleb1"]`` more test clips of each speaker in ``identities``,
    numbered after its base test clips, each a sentence that speaker has not said yet.
    """
    extra = spec["extra_test"]
    rng = random.Random(f"superb-{seed}-extra-test")
    taken = {j["speaker"] for j in jobs}
    out = []
    for _ in range(extra["speech_commands"]):
        spk, name = _speaker(rng), _new_speaker_hash(rng, taken)
        out += _keyword_jobs(rng, spk, name, "test", spec["speech_commands"]["aux_per_speaker"])

    base_tests = spec["voxceleb1"]["test"]
    for spk_id, spk in identities.items():
        said = {j["text"] for j in jobs if j["task"] == "voxceleb1" and j["speaker"] == spk_id}
        for n in range(base_tests, base_tests + extra["voxceleb1"]):
            text = grammar.sentence(rng).lower()
            while text in said:
                text = grammar.sentence(rng).lower()
            said.add(text)
            out.append(_identification_job(seed, spk, spk_id, "test", n, text, rng))

    for _ in range(extra["fluent_speech_commands"]):
        spk, name = _speaker(rng), _new_speaker_hash(rng, taken)
        out += _intent_jobs(rng, seed, spk, name, "test",
                            spec["fluent_speech_commands"]["per_speaker"])

    for _ in range(extra["prosody"]):
        spk, name = _speaker(rng), _new_speaker_hash(rng, taken)
        out += _prosody_jobs(rng, grammar, spk, name, "test", spec["prosody"]["per_class"])
    return out


def _write_noise(folder, seconds=20, seed=0):
    """The background noise recordings of Speech Commands, synthesised with numpy."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = seconds * SAMPLE_RATE
    white = rng.standard_normal(n)
    pink = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.arange(n // 2 + 1) + 1), n)
    tap = rng.standard_normal(n) * (1 + 0.5 * np.sin(np.arange(n) * 2 * np.pi * 3 / SAMPLE_RATE))
    for name, audio in zip(BACKGROUND_NOISES, (white, pink, tap)):
        audio = 0.1 * audio / np.abs(audio).max()
        sf.write(folder / f"{name}.wav", audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")


def _write_indexes(root, task, jobs):
    if task == "speech_commands":
        for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
            lines = sorted(j["path"].split("/", 1)[1] for j in jobs if j["split"] == split)
            (root / task / name).write_text("".join(f"{line}\n" for line in lines))
        _write_noise(root / task / "_background_noise_")
    elif task == "voxceleb1":
        lines = [f"{j['code']} {j['path'].split('/', 2)[2]}\n" for j in jobs]
        (root / task / "iden_split.txt").write_text("".join(lines))
    elif task == "fluent_speech_commands":
        (root / task / "data").mkdir(parents=True, exist_ok=True)
        for split in ("train", "valid", "test"):
            with open(root / task / "data" / f"{split}_data.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["", "path", "speakerId", "transcription", "action", "object",
                                 "location"])
                for i, j in enumerate(j for j in jobs if j["split"] == split):
                    writer.writerow([i, j["path"].split("/", 1)[1], j["speaker"],
                                     j["text"].capitalize(), j["action"], j["object"],
                                     j["location"]])


def superb_dir(seed=0, size="default", root=None):
    """The folder holding the four task folders."""
    return corpus_dir(seed, size, root) / "SUPERB"


def task_dir(task, seed=0, size="default", root=None):
    """The folder of one task (``speech_commands``, ``voxceleb1``, ``fluent_speech_commands``,
    ``prosody``): a recipe's default ``data_folder``."""
    return superb_dir(seed, size, root) / task


def generate_superb(root=None, seed=0, size="default", workers=None, progress=True):
    """Write the four tasks' data (skipping finished ones); return the ``SUPERB`` folder."""
    out = superb_dir(seed, size, root)
    jobs = plan_superb_jobs(seed, size)
    fingerprint = hashlib.sha1(json.dumps(jobs, sort_keys=True).encode()).hexdigest()
    tasks = sorted({j["task"] for j in jobs})
    marks = {t: out / ".done" / t for t in tasks}

    def done(task):
        """Whether ``task`` was written by this version of the plan (its mark's fingerprint)."""
        try:
            return json.loads(marks[task].read_text())["fingerprint"] == fingerprint
        except (OSError, ValueError, KeyError):
            return False

    if all(done(t) for t in tasks):
        return out
    with generation_lock(out):  # one writer at a time; the others find the tasks done
        todo = [t for t in tasks if not done(t)]
        if todo:
            _generate_tasks(out, jobs, todo, fingerprint, marks, workers, progress)
    return out


def _generate_tasks(out, jobs, todo, fingerprint, marks, workers, progress):
    """Synthesise the tasks ``todo`` into ``out`` and mark each one done."""
    _check_tools()
    pending = [j for j in jobs if j["task"] in todo]
    with concurrent.futures.ProcessPoolExecutor(workers or os.cpu_count() or 1) as pool:
        results = pool.map(synthesize, pending, [out] * len(pending), chunksize=16)
        for _ in tqdm(results, total=len(pending), desc=f"SUPERB tasks {out.parent.name}",
                      disable=not progress, unit="clip"):
            pass
    for task in todo:
        _write_indexes(out, task, [j for j in jobs if j["task"] == task])
        marks[task].parent.mkdir(parents=True, exist_ok=True)
        marks[task].write_text(json.dumps({"fingerprint": fingerprint}))


def main(argv=None):
    """Command line: write the SUPERB tasks' data (``generate_superb``) and print its folder.

    Arguments
    ---------
    argv : list of str, optional
        ``--root FOLDER --seed N --size NAME``; ``sys.argv[1:]`` when None.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="default", choices=sorted(SIZES))
    args = parser.parse_args(argv)
    print(generate_superb(args.root, args.seed, args.size))


if __name__ == "__main__":
    main()
