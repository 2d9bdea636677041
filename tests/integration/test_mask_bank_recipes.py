"""Mask banks (``s3brain.deployment.export.export_mask_bank``, ``python -m s3brain.inference
--mask-bank``) of S3-Router runs left in their default folders (``results/SUPERB/<task>/
s3router/<seed>``, ``results/s3router/<seed>``): SUPERB classifiers, LibriSpeech CTC tasks, and
both on one backbone. Through ``foreign_class`` each task gives what its run's own inference
folder gives on the same audio (labels and log-probabilities), alone and in a batch mixing
the tasks; the tasks' names say what each task is and are strings.

The runs are tiny (one epoch) and start from ``w2v2-tiny``, as the inference tests' runs do: the
LibriSpeech head is left random (``--lr=0``) so that its transcripts are not empty.
"""

import csv

import pytest
import torch
from conftest import REPO, run_python, run_recipe

EARLIER = REPO / "s3brain" / "backbones" / "w2v2-tiny"
COMMON = [f"--ssl_hub={EARLIER}", "--synthetic_size=tiny", "--number_of_epochs=1",
          "--cost_repeats=1", "--ssl_frozen_steps=0"]
SUPERB_KS, LIBRISPEECH = REPO / "recipes" / "SUPERB" / "KS", REPO / "recipes" / "LibriSpeech"
#: kind -> (its recipe folder, flags, its runs' default folder less the seed)
RECIPES = {"ks": (SUPERB_KS, [], "results/SUPERB/keyword_spotting/s3router"),
           "ls": (LIBRISPEECH, ["--lr=0", "--lr_ssl=0.001", "--test_batch_size=1"],
                  "results/s3router")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_corpus):
    """``trained(kind, seed)``: the run's default output folder (trained once, from a working
    folder of its own, without ``--output_folder``)."""
    root = tmp_path_factory.mktemp("bank_runs")
    done = {}

    def train(kind, seed):
        if (kind, seed) not in done:
            recipe, flags, folder = RECIPES[kind]
            proc = run_recipe(recipe / "hparams" / "s3router.yaml", *COMMON, *flags,
                              f"--seed={seed}", cwd=root, script=recipe / "train.py")
            assert proc.returncode == 0, proc.stderr[-3000:]
            done[kind, seed] = root / folder / str(seed)
            assert (done[kind, seed] / "task_mask.safetensors").is_file()
        return done[kind, seed]

    return train


def load(folder, classname, savedir):
    """A folder through SpeechBrain's ``foreign_class``."""
    from speechbrain.inference.interfaces import foreign_class

    return foreign_class(source=str(folder), pymodule_file="custom.py", classname=classname,
                         savedir=str(savedir))


def own_asr(run, savedir):
    """A CTC run's own inference folder (written by the recipe) through ``EncoderASR``."""
    from speechbrain.inference.ASR import EncoderASR

    return EncoderASR.from_hparams(source=str(run / "inference"), savedir=str(savedir))


def manifest_files(run, count):
    """The first ``count`` test files of a run (whole files: keyword spotting's
    ``_silence_`` clips, segments of a noise file, are left out)."""
    manifest = next(p for p in (run / "test.csv", run / "test-clean.csv") if p.exists())
    with open(manifest, encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if int(r.get("stop") or -1) < 0]
    return [r["wav"] for r in rows[:count]]


def batch_of(wavs):
    """The files as one batch, cropped to the shortest (no padding)."""
    from s3brain.backbone.audio import read_audio

    signals = [read_audio(w, 16000) for w in wavs]
    length = min(len(s) for s in signals)
    return torch.stack([s[:length] for s in signals]), torch.ones(len(signals))


def test_superb_bank_classifies_as_each_run(trained, tmp_path):
    """Two keyword-spotting runs (seeds 1986, 1987) in one bank from the command line, default
    names: each task classifies each file, and a batch mixing them, as its own run's folder."""
    runs = {"keyword_spotting_s3router_1986": trained("ks", 1986),
            "keyword_spotting_s3router_1987": trained("ks", 1987)}
    proc = run_python("-m", "s3brain.inference", "--mask-bank", tmp_path / "bank",
                      *runs.values())
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "bank" / "hyperparams.yaml").read_text()
    assert all(f'    "{name}":\n' in text for name in runs)  # quoted: strings in any case
    bank = load(tmp_path / "bank", "S3RouterClassifier", tmp_path / "bank_files")
    assert bank.tasks == list(runs) and bank.active_task == next(iter(runs))
    own = {name: load(run / "inference", "UtteranceClassifier", tmp_path / name)
           for name, run in runs.items()}
    wavs = manifest_files(runs["keyword_spotting_s3router_1986"], 6)
    assert len(wavs) == 6
    for name in runs:
        assert [bank.classify_file(w, task=name) for w in wavs] == \
            [own[name].classify_file(w) for w in wavs]

    batch, lens = batch_of(wavs)
    order = list(runs) * 3
    labels, log_probs = bank.classify_batch(batch, lens, order)
    for i, name in enumerate(order):
        expected, expected_lp = own[name].classify_batch(batch[i:i + 1], torch.ones(1))
        assert labels[i] == expected[0]
        torch.testing.assert_close(log_probs[i]["label"], expected_lp["label"][0],
                                   rtol=0, atol=1e-5)
    alone = {name: bank.classify_batch(batch, lens, [name] * len(wavs))[1] for name in runs}
    assert not torch.allclose(*(torch.stack([lp["label"] for lp in alone[n]]) for n in runs)), \
        "the two tasks give one output: the mixed batch could not tell them apart"
    assert bank.active_task == next(iter(runs))

    # a SUPERB run's mask file added at run time: its head and labels from the file and its run
    bank.add_task(runs["keyword_spotting_s3router_1987"] / "task_mask.safetensors", "again")
    assert bank.classify_batch(batch, lens, ["again"] * len(wavs))[0] == \
        bank.classify_batch(batch, lens, ["keyword_spotting_s3router_1987"] * len(wavs))[0]
    with pytest.raises(ValueError, match="classify"):
        bank.transcribe_batch(batch, lens, ["again"] * len(wavs))


def test_librispeech_bank_transcribes_as_each_run(trained, tmp_path):
    """Two LibriSpeech runs in ``results/s3router/<seed>``: string names from what the task is,
    ``foreign_class`` loads them, and a batch mixing them transcribes as each run's own folder."""
    from s3brain.deployment.export import export_mask_bank

    runs = {"librispeech_s3router_1986": trained("ls", 1986),
            "librispeech_s3router_1987": trained("ls", 1987)}
    assert [run.name for run in runs.values()] == ["1986", "1987"]
    bank = load(export_mask_bank(list(runs.values()), tmp_path / "bank"), "S3RouterASR",
                tmp_path / "bank_files")
    assert bank.tasks == list(runs)
    own = {name: own_asr(run, tmp_path / name) for name, run in runs.items()}
    wavs = manifest_files(runs["librispeech_s3router_1986"], 3)
    for name in runs:
        assert [bank.transcribe_file(w, task=name) for w in wavs] == \
            [own[name].transcribe_file(w) for w in wavs]
    assert any(bank.transcribe_file(w) for w in wavs), "empty transcripts: nothing compared"

    batch, lens = batch_of(wavs * 2)
    order = [name for name in runs for _ in wavs]
    words, _ = bank.transcribe_batch(batch, lens, order)
    assert words == [own[name].transcribe_batch(batch[i:i + 1], torch.ones(1))[0][0]
                     for i, name in enumerate(order)]
    assert words[:len(wavs)] != words[len(wavs):], "one transcript for both tasks"
    for name in runs:
        bank.set_task(name)
        with torch.no_grad():
            torch.testing.assert_close(bank.encode_batch(batch[:1], torch.ones(1)),
                                       own[name].encode_batch(batch[:1], torch.ones(1)),
                                       rtol=0, atol=1e-5)


def test_one_bank_serves_classifier_and_ctc_tasks(trained, tmp_path):
    """A keyword-spotting run and a LibriSpeech run on one backbone: the SUPERB head reads every
    hidden layer, the CTC head the last block; each task as its own run, in one mixed call."""
    from s3brain.deployment.export import export_mask_bank

    ks, ls = trained("ks", 1986), trained("ls", 1986)
    bank = load(export_mask_bank([ls, ks], tmp_path / "bank"), "S3RouterClassifier",
                tmp_path / "bank_files")
    assert bank.tasks == ["librispeech", "keyword_spotting"]
    assert [bank.classifies(t) for t in bank.tasks] == [False, True]
    classifier = load(ks / "inference", "UtteranceClassifier", tmp_path / "ks")
    asr = own_asr(ls, tmp_path / "ls")
    ks_wavs, ls_wavs = manifest_files(ks, 4), manifest_files(ls, 2)
    assert [bank.classify_file(w, task="keyword_spotting") for w in ks_wavs] == \
        [classifier.classify_file(w) for w in ks_wavs]
    assert [bank.transcribe_file(w, task="librispeech") for w in ls_wavs] == \
        [asr.transcribe_file(w) for w in ls_wavs]
    batch, lens = batch_of(ks_wavs)
    assert bank.classify_batch(batch, lens, ["keyword_spotting"] * 4)[0] == \
        classifier.classify_batch(batch, lens)[0]
    with pytest.raises(ValueError, match="transcribe"):
        bank.classify_batch(batch, lens, ["keyword_spotting", "librispeech"] * 2)


def test_names_are_refused_when_equal_and_given_anywhere(trained, tmp_path):
    """One run twice would give two tasks one name: refused in one line; ``--names`` before or
    after the run folders names them, and names that yaml would read as numbers stay
    strings (a bank that wrote one unquoted loads too)."""
    run = trained("ks", 1986)
    proc = run_python("-m", "s3brain.inference", "--mask-bank", tmp_path / "refused", run, run)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"ERROR: {run} and {run} would both be task 'keyword_spotting_s3router_1986' (the same "
        f"task, strategy and seed): name the tasks with --names")
    for where, args in (("before", ["--names", "1,2", run, run]),
                        ("after", [run, run, "--names", "1,2"])):
        proc = run_python("-m", "s3brain.inference", "--mask-bank", tmp_path / where, *args)
        assert proc.returncode == 0, (where, proc.stderr[-2000:])
        bank = load(tmp_path / where, "S3RouterClassifier", tmp_path / f"{where}_files")
        assert bank.tasks == ["1", "2"], where
    yaml_file = tmp_path / "after" / "hyperparams.yaml"
    yaml_file.write_text(yaml_file.read_text().replace('    "1":\n', "    1:\n"))
    assert load(tmp_path / "after", "S3RouterClassifier", tmp_path / "unquoted").tasks == \
        ["1", "2"]
