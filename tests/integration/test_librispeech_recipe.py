"""The LibriSpeech recipe end to end: results, bad data, offline hub, kill and resume, DDP."""

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
from conftest import RECIPE, REPO, run_recipe

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
    for key in ("wer_test_clean", "wer_test_other", "cer_test_clean", "cer_test_other"):
        assert 0 <= results[key] <= 1000
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


def test_ddp_two_processes_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--master_port=29531"]
    proc = run_recipe("hparams/weight_ft.yaml", "--debug", "--distributed_backend=gloo",
                      f"--output_folder={out}", *TINY, "--cost_repeats=1", launcher=torchrun,
                      timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["wer_test_clean"] is not None
    assert "Distributed training: 2 processes (gloo backend)" in (out / "log.txt").read_text()
