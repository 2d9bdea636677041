"""A finished run's inference folder (``s3brain.deployment.export.export_inference``) loaded with
SpeechBrain's ``EncoderASR`` transcribes each test utterance as the recipe's own greedy decoding
did (``wer_test-clean.txt`` / ``per_test.txt``), for every strategy family.

The runs are tiny and short, but trained so that their transcripts are not empty (a test that
compares empty strings could not fail): either a few epochs with a fast head, or the head left
at its random initialisation (``--lr=0``) over a backbone the strategy changed. Each run tests
one utterance at a time (``--test_batch_size=1``), as ``transcribe_file`` does. The budgets
were set on ``w2v2-tiny``, which the runs start from: from the default ``w2v2-tiny-8k`` the random
head over uniform skipping emits only blanks and every utterance exits at the last block.
"""

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO, run_python, run_recipe

#: the backbone the budgets below were set on (the earlier default)
EARLIER = REPO / "s3brain" / "backbones" / "w2v2-tiny"
COMMON = [f"--ssl_hub={EARLIER}", "--synthetic_size=tiny", "--cost_repeats=1",
          "--test_batch_size=1", "--ssl_frozen_steps=0"]
#: head trained fast for a few epochs: it emits characters, not only blanks
TRAINED = ["--number_of_epochs=6", "--lr=0.02", "--lr_ssl=0.001"]
#: one epoch, the head left random over the backbone as the strategy changed it
RANDOM_HEAD = ["--number_of_epochs=1", "--lr=0", "--lr_ssl=0.001"]
CV_RECIPE = REPO / "recipes" / "CommonVoice" / "train.py"
LS_RECIPE = REPO / "recipes" / "LibriSpeech"
INIT = "--init_from="

#: name -> (recipe script, yaml, flags, (flag, run it starts from) or None)
RUNS = {
    "weight_ft": (None, "weight_ft.yaml", TRAINED, None),
    "s3router": (None, "s3router.yaml", RANDOM_HEAD, None),
    "lora": (None, "lora.yaml", RANDOM_HEAD, None),
    "adapter": (None, "adapter.yaml", RANDOM_HEAD, None),
    "safari": (None, "safari.yaml", RANDOM_HEAD, (INIT, "weight_ft")),
    # pruned to its FLOPs target within the epoch's 2 steps: CNN channels, heads, FFN units
    "budget_pruning": (None, "budget_pruning.yaml",
                       [*RANDOM_HEAD, "--prune_every=1", "--prune_until=2"], (INIT, "weight_ft")),
    "downsampling_conv": (None, "downsampling_conv.yaml", TRAINED, None),
    "skip_uniform": (None, "skip_uniform.yaml", RANDOM_HEAD, None),
    "salad": (None, "salad.yaml", TRAINED, ("--salad_detector=", "salad_detector")),
    "early_exit": (None, "early_exit.yaml",
                   ["--number_of_epochs=1", "--lr=0.02", "--exit_threshold=1.25"],
                   (INIT, "weight_ft")),
    "cv_weight_ft": (CV_RECIPE, "weight_ft.yaml", TRAINED, None),
    "cv_s3router": (CV_RECIPE, "s3router.yaml", RANDOM_HEAD, None),
}


def _optional_flags(script, yaml_name):
    """Flags for keys only some yamls have (no LM, no int8 error rates: not what is tested)."""
    text = ((script or LS_RECIPE / "train.py").parent / "hparams" /
            yaml_name).read_text()
    return [flag for key, flag in (("lm_decoding:", "--lm_decoding=False"),
                                   ("int8_eval:", "--int8_eval=False")) if key in text]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_corpus):
    """``trained(name)``: the output folder of run ``name`` of ``RUNS`` (trained once)."""
    root = tmp_path_factory.mktemp("inference_runs")
    done = {}

    def train(name):
        if name == "salad_detector" and name not in done:  # trained by its own script
            out = root / name
            proc = run_recipe(str(LS_RECIPE / "hparams" / "salad" / "detector.yaml"),
                              "--synthetic_size=tiny", "--number_of_epochs=2",
                              f"--teacher_from={train('weight_ft')}", f"--output_folder={out}",
                              script=LS_RECIPE / "train_salad.py")
            assert proc.returncode == 0, proc.stderr[-3000:]
            done[name] = out
        if name not in done:
            script, yaml_name, flags, start = RUNS[name]
            out = root / name
            extra = [f"{start[0]}{train(start[1])}"] if start else []
            proc = run_recipe(f"hparams/{yaml_name}", *COMMON, *flags, *extra,
                              *_optional_flags(script, yaml_name), f"--output_folder={out}",
                              **({"script": script} if script else {}))
            assert proc.returncode == 0, proc.stderr[-3000:]
            done[name] = out
        return done[name]

    return train


def recipe_hypotheses(run):
    """``{utterance ID: hypothesis tokens}`` from the run's greedy error-rate file."""
    path = run / "per_test.txt" if (run / "per_test.txt").exists() else run / "wer_test-clean.txt"
    hyps = {}
    for block in path.read_text().split("=" * 80)[2:]:
        lines = [line for line in block.strip().splitlines() if line.strip()]
        if len(lines) == 4:  # header, reference, operations, hypothesis
            hyps[lines[0].split(",")[0]] = [t.strip() for t in lines[3].split(";")
                                            if t.strip() != "<eps>"]
    assert hyps, path
    return hyps


def manifest_wavs(run):
    """``{utterance ID: wav path}`` of the run's test manifest."""
    manifest = run / "test.csv" if (run / "test.csv").exists() else run / "test-clean.csv"
    with open(manifest, encoding="utf-8") as f:
        return {row["ID"]: row["wav"] for row in csv.DictReader(f)}


def load_asr(folder, savedir):
    """The inference folder through SpeechBrain's own interface."""
    from speechbrain.inference.ASR import EncoderASR

    return EncoderASR.from_hparams(source=str(folder), savedir=str(savedir))


@pytest.mark.parametrize("name", list(RUNS))
def test_transcripts_equal_the_recipes_greedy_output(name, trained, tmp_path):
    from s3brain.deployment.export import export_inference

    run = trained(name)
    folder = export_inference(run)
    assert folder == run / "inference"
    asr = load_asr(folder, tmp_path / "asr")
    hyps, wavs = recipe_hypotheses(run), manifest_wavs(run)
    assert len(hyps) >= 4
    assert any(hyps.values()), f"{name}: every transcript is empty; the test could not fail"
    for uid, expected in hyps.items():
        assert asr.transcribe_file(wavs[uid]).split() == expected, (name, uid)
    # A padded batch. Every backbone here has the base layout (group norm in the first conv
    # layer, over the whole padded length): a padded utterance's features change with the
    # padding, so only the unpadded one, the longest, must transcribe as the recipe did
    # alone; early exit runs each utterance alone, so there all of them must.
    signals = [asr.load_audio(wavs[uid]) for uid in hyps]
    batch = torch.nn.utils.rnn.pad_sequence(signals, batch_first=True)
    lens = torch.tensor([len(s) / batch.shape[1] for s in signals])
    words, _ = asr.transcribe_batch(batch, lens)
    assert len(words) == len(hyps)
    longest = max(range(len(signals)), key=lambda i: len(signals[i]))
    assert words[longest].split() == list(hyps.values())[longest], name
    if name == "early_exit":  # each utterance runs alone: not changed by the padding
        assert [w.split() for w in words] == list(hyps.values())
    # Equal lengths, so nothing is padded: the test utterances cut to the shortest one's
    # length, as files, transcribe in one batch as each file does alone (frames dropped,
    # merged, skipped or exits taken per utterance, never mixed between them).
    length = min(len(s) for s in signals)
    cut = []
    for i, signal in enumerate(signals):
        cut.append(tmp_path / f"cut{i}.wav")
        sf.write(cut[-1], signal[:length].numpy(), 16000, subtype="FLOAT")
    alone = [asr.transcribe_file(str(path)) for path in cut]
    together, _ = asr.transcribe_batch(torch.stack([asr.load_audio(str(p)) for p in cut]),
                                       torch.ones(len(cut)))
    assert together == alone, name
    assert any(alone), f"{name}: every cut utterance's transcript is empty; could not fail"
    if name == "early_exit":  # the same exits as the recipe's test pass
        import json

        asr.transcribe_batch(batch, lens)
        exits = asr.mods.encoder.exit_blocks
        assert len(set(exits)) > 1, f"every utterance exits at block {exits[0]}"
        mean_exit = np.mean(exits)
        results = json.loads((run / "results.json").read_text())
        assert mean_exit == pytest.approx(results["mean_exit_block_test_clean"], abs=1e-3)


@pytest.mark.parametrize("name", ["safari", "budget_pruning"])
def test_deployed_model_is_smaller_and_shrunk(name, trained, tmp_path):
    """SAFARI's and budget pruning's inference folders hold the shrunk model: fewer parameters
    than the dense one (and for budget pruning, fewer CNN channels)."""
    from s3brain.deployment.export import export_inference

    dense = load_asr(export_inference(trained("weight_ft")), tmp_path / "dense")
    shrunk = load_asr(export_inference(trained(name)), tmp_path / "shrunk")
    config = shrunk.mods.encoder.backbone.model.config
    assert config.layer_intermediate_sizes is not None
    assert (sum(p.numel() for p in shrunk.mods.encoder.parameters())
            < sum(p.numel() for p in dense.mods.encoder.parameters()))
    if name == "budget_pruning":
        assert sum(config.conv_dim) < sum(dense.mods.encoder.backbone.model.config.conv_dim)


def test_any_rate_and_channels(trained, tmp_path):
    """An 8 kHz stereo file reads as the recipe reads it (``s3brain.backbone.audio.read_audio``), and
    transcribes as that signal does."""
    from s3brain.backbone.audio import read_audio, resample
    from s3brain.deployment.export import export_inference

    run = trained("weight_ft")
    asr = load_asr(export_inference(run), tmp_path / "asr")
    uid, wav = next(iter(manifest_wavs(run).items()))
    data, rate = sf.read(wav, dtype="float32")
    low = resample(torch.from_numpy(data), rate, 8000).numpy()
    stereo = tmp_path / "stereo_8k.wav"
    sf.write(stereo, np.stack([low, 0.5 * low], 1), 8000)
    signal = asr.load_audio(str(stereo))
    assert torch.equal(signal, read_audio(stereo, 16000))
    words, _ = asr.transcribe_batch(signal[None], torch.ones(1))
    assert asr.transcribe_file(str(stereo)) == words[0]


def test_command_line(trained, tmp_path):
    run = trained("s3router")
    target = tmp_path / "exported"
    proc = run_python("-m", "s3brain.deployment.export", run, "--target", target)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip().splitlines()[-1]) == target
    assert {p.name for p in target.iterdir()} == {"hyperparams.yaml", "encoder.ckpt",
                                                  "tokenizer.ckpt"}
    bad = run_python("-m", "s3brain.deployment.export", tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("ERROR: ")


def test_mask_bank_serves_each_task_as_its_own_model(trained, tmp_path):
    """LibriSpeech and CommonVoice-en S3-Router runs on the same backbone, in one bank: each
    task transcribes as its own exported model, alone, in a batch mixing the tasks, and after
    a task is added at run time; the backbone is never reloaded."""
    from speechbrain.inference.interfaces import foreign_class

    from s3brain.backbone.audio import read_audio
    from s3brain.deployment.export import export_inference, export_mask_bank

    runs = {"librispeech": trained("s3router"), "en": trained("cv_s3router")}
    bank_dir = export_mask_bank(list(runs.values()), tmp_path / "bank")  # names: what each is
    bank = foreign_class(source=str(bank_dir), pymodule_file="custom.py",
                         classname="S3RouterASR", savedir=str(tmp_path / "bank_files"))
    assert bank.tasks == ["librispeech", "en"] and bank.active_task == "librispeech"
    own = {task: load_asr(export_inference(run), tmp_path / task) for task, run in runs.items()}
    wavs = {task: list(manifest_wavs(run).values())[:3] for task, run in runs.items()}
    weight = next(bank.mods.backbone.parameters())
    pointer = weight.data_ptr()
    for task in runs:
        for wav in wavs[task]:
            assert bank.transcribe_file(wav, task=task) == own[task].transcribe_file(wav)
    assert any(bank.transcribe_file(wav, task="en") for wav in wavs["en"])

    # a batch mixing the tasks (cropped to one length: no padding), in its own order
    order = ["en", "librispeech", "librispeech", "en", "librispeech", "en"]
    signals = [read_audio(wavs[task][i // 2], 16000) for i, task in enumerate(order)]
    length = min(len(s) for s in signals)
    batch = torch.stack([s[:length] for s in signals])
    words, _ = bank.transcribe_batch(batch, torch.ones(len(order)), order)
    expected = [own[task].transcribe_batch(batch[i:i + 1], torch.ones(1))[0][0]
                for i, task in enumerate(order)]
    assert words == expected
    assert bank.active_task == "librispeech"  # left as it was
    assert next(bank.mods.backbone.parameters()).data_ptr() == pointer

    # a task added at run time: the same file under another name transcribes the same
    bank.add_task(runs["librispeech"] / "task_mask.safetensors", "ls_again")
    assert bank.transcribe_batch(batch, torch.ones(len(order)), ["ls_again"] * 6)[0] == \
        bank.transcribe_batch(batch, torch.ones(len(order)), ["librispeech"] * 6)[0]
    with pytest.raises(KeyError, match="not loaded"):
        bank.transcribe_batch(batch[:1], torch.ones(1), ["de"])

    # the command line serves a bank's task too
    proc = run_python("-m", "s3brain.inference.transcribe", bank_dir, "--task", "en", "--no-progress",
                      wavs["en"][0])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.rstrip("\n").split("\t")[1] == own["en"].transcribe_file(wavs["en"][0])


def readme_snippets(recipe):
    """The python blocks of a recipe README's "Using a trained model" section."""
    import re

    text = (REPO / "recipes" / recipe / "README.md").read_text(encoding="utf-8")
    section = text.split("## Using a trained model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def run_snippet(code, cwd):
    """A README snippet run as written in ``cwd``; its stdout lines."""
    proc = run_python("-c", code, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.rstrip("\n").split("\n")


def test_librispeech_readme_snippet_runs_as_written(trained, tmp_path):
    from s3brain.deployment.export import export_inference

    run = trained("weight_ft")
    asr = load_asr(export_inference(run), tmp_path / "asr")
    (tmp_path / "results" / "weight_ft").mkdir(parents=True)
    (tmp_path / "results" / "weight_ft" / "1986").symlink_to(run)
    uid, expected = next((u, h) for u, h in recipe_hypotheses(run).items() if h)
    data, rate = sf.read(manifest_wavs(run)[uid])
    sf.write(tmp_path / "speech.wav", data, rate)
    [snippet] = readme_snippets("LibriSpeech")
    assert run_snippet(snippet, tmp_path)[-1].split() == expected
    assert asr.transcribe_file(str(tmp_path / "speech.wav")).split() == expected


def test_common_voice_readme_snippets_run_as_written(trained, tmp_path):
    import shutil

    from s3brain.deployment.export import export_inference, export_mask_bank

    run, s3router = trained("cv_weight_ft"), trained("cv_s3router")
    export_inference(run)
    export_mask_bank([s3router], tmp_path / "bank", names=["en"])
    folder = tmp_path / "results" / "CommonVoice" / "en" / "weight_ft"
    folder.mkdir(parents=True)
    (folder / "1986").symlink_to(run)
    uid, expected = next((u, h) for u, h in recipe_hypotheses(run).items() if h)
    shutil.copy(manifest_wavs(run)[uid], tmp_path / "clip.mp3")
    single, bank = readme_snippets("CommonVoice")
    assert run_snippet(single, tmp_path)[-1].split() == expected
    own = load_asr(export_inference(s3router), tmp_path / "own")
    assert run_snippet(bank, tmp_path)[-1] == own.transcribe_file(str(tmp_path / "clip.mp3"))
