"""The LibriSpeech recipe end to end: results, a finished run tested on a split of another name,
bad data, offline hub, kill and resume, DDP."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import (
    RECIPE,
    REPO,
    assert_results_match_error_files,
    logged_value,
    read_error_file,
    run_recipe,
)

from s3brain.utils.results import RESULT_KEYS

TINY = ["--synthetic_size=tiny"]


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    """One --debug run of the default yaml, started from the recipe folder with a relative path."""
    out = tmp_path_factory.mktemp("debug") / "run"
    proc = run_recipe("hparams/weight_ft.yaml", "--debug", f"--output_folder={out}", *TINY,
                      "--int8_eval=True", cwd=RECIPE)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_debug_run_reports_int8_beside_fp32(debug_run):
    out, results = debug_run
    assert results["primary_metric"] == "wer_test_clean"
    assert results["int8_backend"] == "onnxruntime"
    assert results["latency_ms_10s_int8"] > 0
    assert results["rtf_int8"] == pytest.approx(results["latency_ms_10s_int8"] / 1e4, rel=1e-2)
    for split in ("test_clean", "test_other"):
        for key in (f"wer_{split}_int8", f"cer_{split}_int8", f"int8_same_transcript_{split}"):
            assert key in results["metric_keys"] and results[key] is not None, key
        assert 0 <= results[f"int8_same_transcript_{split}"] <= 1
    # the int8 keys come after every fp32 one
    keys = results["metric_keys"]
    assert keys.index("wer_test_other") < keys.index("wer_test_clean_int8")


def test_debug_run_writes_results(debug_run):
    out, results = debug_run
    assert set(RESULT_KEYS) <= set(results)
    assert set(assert_results_match_error_files(out)) == {
        "wer_test_clean", "wer_test_other", "wer_test_clean_lm", "wer_test_other_lm"}
    # The seeded debug run (2 steps of 2 epochs) still emits only blanks: every error rate is
    # 100 (a rate that cannot move), so the losses it logged are checked too, against the
    # reference run at this code (seed 1986, tiny corpus): train loss 4.23 at epoch 2, test
    # loss 3.31 (test-clean) and 3.36 (test-other). Margin 0.05: the log's last digit and the
    # float sums of another thread count; one step less or a wrong target moves them by more.
    for key in ("wer_test_clean", "wer_test_other", "cer_test_clean", "cer_test_other",
                "wer_test_clean_lm", "wer_test_other_lm"):
        assert results[key] == 100.0, key
    for line, key, reference in (("epoch: 2", "train loss", 4.23),
                                 ("test split: test-clean", "test loss", 3.31),
                                 ("test split: test-other", "test loss", 3.36)):
        assert abs(logged_value(out, line, key) - reference) <= 0.05, (line, key)
    assert results["strategy"] == "weight_ft" and results["train_split"] == "train-10m"
    assert results["ssl_init"] in ("pretrained", "random")
    assert 0 < results["params_transformer"] < results["params_total"]
    # weight fine-tuning trains all but the frozen CNN feature extractor
    assert results["params_trainable"] < results["params_total"]
    assert results["storage_bytes_per_task"] == 4 * results["params_total"]
    assert results["flops_10s"] > 1e8 and results["latency_ms_10s"] > 0
    assert results["rtf"] == pytest.approx(results["latency_ms_10s"] / 1e4, rel=1e-2)
    assert results["train_seconds"] > 0
    assert (out / "wer_test-clean.txt").exists() and (out / "wer_test-other.txt").exists()


def test_flops_match_an_independent_count(debug_run, tmp_path):
    """flops_10s equals the flop counter over the backbone plus the head's two matmuls."""
    from s3brain.backbone.wrapper import default_backbone, load_ssl
    from s3brain.utils.efficiency import count_flops

    ssl = load_ssl(default_backbone(), tmp_path)
    ssl.eval()
    wav = torch.zeros(1, 160000)
    backbone = count_flops(ssl, wav)
    frames, hidden = ssl(wav).shape[1], ssl.model.config.hidden_size
    head = 2 * frames * (hidden * 256 + 256 * 29)
    assert debug_run[1]["flops_10s"] == backbone + head


def _own_test_split(tiny_corpus, tmp_path, name="test-mine", utterances=3):
    """A data folder holding the tiny corpus's training and dev splits and a user's own test
    split ``name`` in LibriSpeech layout: the first ``utterances`` of test-clean under another
    speaker and chapter, at 8 kHz (the recipe reads any rate). Returns the folder and the
    split's word count."""
    import soundfile as sf
    import torchaudio

    root = tmp_path / "LibriSpeech"
    for split in ("train-10m", "dev-clean"):
        shutil.copytree(tiny_corpus / "LibriSpeech" / split, root / split)
    chapter = root / name / "9001" / "90010"
    chapter.mkdir(parents=True)
    source = min((tiny_corpus / "LibriSpeech" / "test-clean").glob("*/*/*.trans.txt"))
    lines = []
    for i, line in enumerate(source.read_text().splitlines()[:utterances]):
        uid, words = line.split(" ", 1)
        wav, rate = sf.read(str(source.parent / f"{uid}.flac"), dtype="float32")
        wav = torchaudio.functional.resample(torch.from_numpy(wav), rate, 8000).numpy()
        sf.write(str(chapter / f"9001-90010-{i:04d}.flac"), wav, 8000, format="FLAC")
        lines.append(f"9001-90010-{i:04d} {words}")
    (chapter / "9001-90010.trans.txt").write_text("\n".join(lines) + "\n")
    return tmp_path, sum(len(line.split()) - 1 for line in lines)


def test_finished_run_tested_on_an_own_split_keeps_both(debug_run, tiny_corpus, tmp_path):
    """A copy of the finished debug run started again on a split of another name
    (``--test_splits='["test-mine"]'``) only tests: results.json gets that split's greedy, LM
    and int8 figures as its files say, ranks by them, and keeps the earlier splits'."""
    out, before = tmp_path / "run", debug_run[1]
    shutil.copytree(debug_run[0], out)
    data, words = _own_test_split(tiny_corpus, tmp_path)
    # the debug run stopped after 2 epochs: with that limit its checkpoint says training is done
    proc = run_recipe("hparams/weight_ft.yaml", "--debug", f"--output_folder={out}", *TINY,
                      "--number_of_epochs=2", f"--data_folder={data}",
                      '--test_splits=["test-mine"]', "--int8_eval=True", "--cost_repeats=1",
                      cwd=RECIPE)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "epoch: 3" not in (out / "train_log.txt").read_text()  # nothing trained
    results = json.loads((out / "results.json").read_text())
    assert results["primary_metric"] == "wer_test_mine"
    mine = ["cer_test_mine", "wer_test_mine", "wer_test_mine_lm", "wer_test_mine_int8",
            "cer_test_mine_int8", "int8_same_transcript_test_mine"]
    assert results["metric_keys"] == before["metric_keys"] + mine
    assert all(results[key] is not None for key in mine), {k: results[k] for k in mine}
    # each figure is its file's, and the file scored the own split's words, not test-clean's
    summaries = assert_results_match_error_files(out)
    assert set(summaries) == {f"wer_{split}{lm}" for split in ("test_clean", "test_other",
                                                               "test_mine") for lm in ("", "_lm")}
    assert results["wer_test_mine"] == read_error_file(out / "wer_test-mine.txt")[0]
    assert results["wer_test_mine_lm"] == read_error_file(out / "wer_lm_test-mine.txt")[0]
    assert summaries["wer_test_mine"][2] == summaries["wer_test_mine_lm"][2] == words
    assert 0 <= results["wer_test_mine_int8"] <= 100
    if results["int8_same_transcript_test_mine"] == 1.0:  # every utterance decoded as in fp32
        assert results["wer_test_mine_int8"] == results["wer_test_mine"]
    for key in before["metric_keys"]:  # the earlier splits' figures, as they were
        assert results[key] == before[key], key


def _corrupt_copy(tiny_corpus, tmp_path):
    """A copy of the tiny LibriSpeech with one bad case of each kind in train-10m."""
    root = tmp_path / "LibriSpeech"
    for split in ("train-10m", "dev-clean", "test-clean", "test-other"):
        shutil.copytree(tiny_corpus / "LibriSpeech" / split, root / split)
    trans = sorted((root / "train-10m").glob("*/*/*.trans.txt"))[0]
    lines = trans.read_text().splitlines()
    ids = [line.split(" ", 1)[0] for line in lines]
    (trans.parent / f"{ids[0]}.flac").write_bytes(b"")  # empty audio
    lines[1] = f"{ids[1]} CAFÉ AU LAIT 42"               # outside the label set
    # a 0.1 s clip with a long transcript: too short for CTC
    import soundfile as sf

    sf.write(str(trans.parent / f"{ids[2]}.flac"), [0.0] * 1600, 16000, format="FLAC")
    trans.write_text("\n".join(lines) + "\n")
    return root, ids[:3]


def test_bad_data_is_skipped_not_fatal(tiny_corpus, tmp_path):
    data, bad_ids = _corrupt_copy(tiny_corpus, tmp_path)
    out = tmp_path / "run"
    proc = run_recipe("hparams/weight_ft.yaml", "--debug", f"--output_folder={out}",
                      f"--data_folder={data}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    log = proc.stdout + proc.stderr
    assert re.search(rf"Skipping {bad_ids[0]}: (empty|unreadable) audio", log)
    assert f"Skipping {bad_ids[1]}: transcript has symbols outside the label set" in log
    assert f"Skipping {bad_ids[2]}: too short for CTC" in log
    results = json.loads((out / "results.json").read_text())
    assert all(results[k] == results[k] for k in ("wer_test_clean", "cer_test_clean"))  # no NaN
    assert_results_match_error_files(out)
    train_ids = (out / "train.csv").read_text()
    assert bad_ids[0] not in train_ids  # empty audio never reaches the manifest


def test_offline_hub_name_gives_one_clear_line(tmp_path):
    proc = run_recipe("hparams/weight_ft.yaml", "--ssl_hub=facebook/wav2vec2-base",
                      f"--output_folder={tmp_path}", *TINY, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1
    assert "facebook/wav2vec2-base" in errors[0] and "--ssl_hub=" in errors[0]
    assert "Traceback" not in proc.stderr


def test_missing_data_folder_says_layout(tmp_path):
    proc = run_recipe("hparams/weight_ft.yaml", f"--data_folder={tmp_path / 'none'}",
                      f"--output_folder={tmp_path / 'run'}", "--debug")
    assert proc.returncode == 2
    assert "ERROR: LibriSpeech data folder" in proc.stderr
    assert "Expected <data_folder>/<split>/<speaker>/<chapter>/" in proc.stderr
    assert "Traceback" not in proc.stderr


# the backbone is unfrozen after 5 of the 16 updates, so both phases are covered
RESUME_ARGS = [*TINY, "--number_of_epochs=2", "--batch_size=2", "--ckpt_interval_steps=2",
               "--ckpt_interval_minutes=0", "--cost_repeats=1", "--ssl_frozen_steps=5"]


def _final_state(out):
    ckpts = sorted((out / "save").glob("CKPT+*"))
    ssl = torch.load(ckpts[-1] / "ssl.ckpt")
    head = torch.load(ckpts[-1] / "model.ckpt")
    results = json.loads((out / "results.json").read_text())
    return {**ssl, **{f"head.{k}": v for k, v in head.items()}}, results


def test_kill_mid_epoch_and_resume_gives_same_result(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    def start(out):
        cmd = [sys.executable, str(RECIPE / "train.py"), "hparams/weight_ft.yaml",
               f"--output_folder={out}", *RESUME_ARGS]
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True)

    reference, victim = start(straight), start(resumed)
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and victim.poll() is None:
        texts = [m.read_text() for m in (resumed / "save").glob("CKPT+*/CKPT.yaml")]
        # kill in epoch 2 (an end-of-epoch checkpoint exists), after a mid-epoch checkpoint
        if any("intra_epoch" in t for t in texts) and any("WER" in t for t in texts):
            victim.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    victim.wait()
    assert killed, "the run ended before it could be killed mid-epoch"
    assert not (resumed / "results.json").exists()

    # same thread count as the reference: float sums are only bit-identical for equal threads
    proc = run_recipe("hparams/weight_ft.yaml", f"--output_folder={resumed}", *RESUME_ARGS,
                      env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Loading a checkpoint" in proc.stdout + proc.stderr
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    weights_a, results_a = _final_state(straight)
    weights_b, results_b = _final_state(resumed)
    for key in ("wer_test_clean", "wer_test_other", "cer_test_clean", "cer_test_other"):
        assert results_a[key] == results_b[key], key
    assert assert_results_match_error_files(straight) == assert_results_match_error_files(resumed)
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    # the backbone was trained after its frozen phase, its CNN feature extractor never
    from safetensors.torch import load_file

    from s3brain.backbone.wrapper import default_backbone

    initial = load_file(f"{default_backbone()}/model.safetensors")
    ffn = "encoder.layers.0.feed_forward.intermediate_dense.weight"
    conv = "feature_extractor.conv_layers.1.conv.weight"
    assert not torch.equal(weights_a[f"model.{ffn}"], initial[ffn])
    assert torch.equal(weights_a[f"model.{conv}"], initial[conv])


#: runs the recipe as it is, recording the IDs of every training batch and the optimizer steps
#: of each process in <trace>/rank<RANK>.txt (nothing in the recipe's output folder changes)
TRACED_TRAIN = """
import os, runpy, sys
import speechbrain as sb

RECIPE, TRACE = {recipe!r}, {trace!r}
fit_batch = sb.core.Brain.fit_batch


def traced_fit_batch(self, batch):
    loss = fit_batch(self, batch)
    with open(os.path.join(TRACE, "rank" + os.environ.get("RANK", "0") + ".txt"), "a") as f:
        f.write(f"{{self.hparams.epoch_counter.current}} {{self.optimizer_step}} "
                f"{{' '.join(batch.id)}}\\n")
    return loss


sb.core.Brain.fit_batch = traced_fit_batch
sys.path.insert(0, RECIPE)
sys.argv[0] = os.path.join(RECIPE, "train.py")
runpy.run_path(sys.argv[0], run_name="__main__")
"""

#: --debug: 2 epochs of 2 steps, which at 8 utterances a step cover the 16 of the tiny train-10m
#: (--debug_persistently keeps the checkpoints). SpecAugment and the head's dropout off, so that
#: no run draws random masks (the backbone's dropout: see ``_no_dropout_backbone``); no LM (a
#: beam search over blank outputs).
DDP_ARGS = [*TINY, "--debug", "--debug_persistently", "--cost_repeats=1", "--lm_decoding=False",
            "--dropout=0", "--mask_time_prob=0", "--mask_feature_prob=0"]


def _traced_run(tmp_path, name, *args, launcher=None):
    """A run of weight_ft.yaml through ``TRACED_TRAIN``: its output folder and
    ``[(epoch, optimizer step after the batch, batch IDs)]`` per rank."""
    out, trace = tmp_path / name, tmp_path / f"{name}_trace"
    trace.mkdir()
    script = tmp_path / f"{name}_train.py"
    script.write_text(TRACED_TRAIN.format(recipe=str(RECIPE), trace=str(trace)))
    proc = run_recipe("hparams/weight_ft.yaml", f"--output_folder={out}", *DDP_ARGS, *args,
                      launcher=launcher, script=script, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    batches = {}
    for path in sorted(trace.glob("rank*.txt")):
        rows = [line.split(" ", 2) for line in path.read_text().splitlines()]
        batches[int(path.stem[4:])] = [(int(e), int(s), ids.split()) for e, s, ids in rows]
    return out, batches


def _no_dropout_backbone(folder):
    """A copy of the default backbone with its dropout off: each process draws dropout masks
    for its own batch size from the same seed, so with it on the two runs differ by chance.
    (The config's probabilities are read when the model is built: the yaml's
    ``config_overrides`` cannot change them.)"""
    from s3brain.backbone.wrapper import default_backbone

    shutil.copytree(default_backbone(), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                  feat_proj_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _head_weights(out):
    """The head's tensors in the run's last checkpoint (the one its test pass loaded)."""
    return torch.load(max((out / "save").glob("CKPT+*")) / "model.ckpt")


def test_ddp_two_processes_on_cpu(tmp_path):
    """Two processes with 4 utterances each per step train as one process with 8 does (same
    seed, data, backbone, command but for --batch_size and the launcher): each rank gets every
    other utterance of the sorted training set (DistributedSampler, no shuffling), so each
    step's 8 utterances are the one-process run's 8, and the averaged gradient is that of the
    mean loss over them (the CTC loss is a mean over utterances).

    Not bit for bit: each rank pads its 4 utterances to its own longest, not to the 8's (the
    base layout's group norm sees the padding), and sums in another order. Measured at this
    code: the head's tensors differ by at most 0.27% of their norm from the one-process run's
    (one process on 8 of the 16 utterances, the same steps, ends 2.1 to 6.1% away), the
    logged valid and test losses are equal to their 2 decimals (that run: 0.02 to 0.03 away).
    Tolerances: 1% and 0.015. The train loss is not compared: each process logs its own half.
    """
    backbone = _no_dropout_backbone(tmp_path / "backbone")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--master_port=29531"]
    ddp, ddp_batches = _traced_run(tmp_path, "ddp", "--batch_size=4", f"--ssl_hub={backbone}",
                                   "--distributed_backend=gloo", launcher=torchrun)
    single, single_batches = _traced_run(tmp_path, "single", "--batch_size=8",
                                         f"--ssl_hub={backbone}")
    assert "Distributed training: 2 processes (gloo backend)" in (ddp / "log.txt").read_text()

    # each rank ran its half of every step of the one-process run, and as many steps
    with open(single / "train.csv") as f:
        train_ids = [row["ID"] for row in csv.DictReader(f)]
    assert sorted(ddp_batches) == [0, 1] and sorted(single_batches) == [0]
    rank0, rank1, alone = ddp_batches[0], ddp_batches[1], single_batches[0]
    assert len(rank0) == len(rank1) == len(alone) == 2 * len(train_ids) // 8
    for (epoch, step, ids), (epoch_0, step_0, ids_0), (epoch_1, step_1, ids_1) in zip(
            alone, rank0, rank1):
        assert epoch == epoch_0 == epoch_1 and step == step_0 == step_1
        assert len(ids_0) == len(ids_1) == 4 and not set(ids_0) & set(ids_1)
        assert set(ids_0) | set(ids_1) == set(ids)
    assert {i for epoch, _, ids in alone if epoch == 1 for i in ids} == set(train_ids)

    # the same model, within the tolerances above; the same error rates (blank outputs: 100)
    assert assert_results_match_error_files(ddp) == assert_results_match_error_files(single)
    ddp_results = json.loads((ddp / "results.json").read_text())
    single_results = json.loads((single / "results.json").read_text())
    for key in ("wer_test_clean", "wer_test_other", "cer_test_clean", "cer_test_other"):
        assert ddp_results[key] == single_results[key], key
    ddp_head, single_head = _head_weights(ddp), _head_weights(single)
    assert ddp_head.keys() == single_head.keys()
    for key, tensor in single_head.items():
        assert (ddp_head[key] - tensor).norm() <= 0.01 * tensor.norm(), key
    for line, key in (("epoch: 1", "valid loss"), ("epoch: 2", "valid loss"),
                      ("test split: test-clean", "test loss"),
                      ("test split: test-other", "test loss")):
        assert abs(logged_value(ddp, line, key) - logged_value(single, line, key)) <= 0.015, \
            (line, key)
