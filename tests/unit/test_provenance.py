"""What a record may say of its paths and machine (s3brain.utils.provenance): paths inside the
repository relative to it, outside it their last two parts after ``...``, relative ones
unchanged; the same for command-line arguments (also after ``NAME=``) and for nested record
values; the machine's facts."""

import os
import platform
from pathlib import Path

from s3brain.utils.provenance import (
    REPO,
    cpu_model,
    machine_facts,
    portable_argv,
    portable_path,
    portable_values,
)


def test_a_path_inside_the_repository_is_relative_to_it(tmp_path):
    repo = tmp_path / "repo"
    assert portable_path(repo / "benchmarks" / "records" / "x.json", repo) == \
        "benchmarks/records/x.json"
    assert portable_path(str(repo / "results" / "a"), str(repo)) == "results/a"
    assert portable_path(f"{repo}/results/../benchmarks/x.json", repo) == "benchmarks/x.json"
    assert portable_path(repo, repo) == "."
    # by default the repository is this one
    assert portable_path(REPO / "s3brain" / "utils") == "s3brain/utils"
    assert (REPO / "s3brain" / "utils" / "provenance.py").is_file()


def test_a_path_outside_keeps_its_last_two_parts_and_a_relative_one_is_unchanged(tmp_path):
    repo = tmp_path / "repo"
    assert portable_path("/tmp/runs/a/inference", repo) == ".../a/inference"
    assert portable_path(Path("/data/LibriSpeech"), repo) == ".../data/LibriSpeech"
    assert portable_path("/data", repo) == ".../data"
    # a sibling whose name starts like the repository's is outside it
    assert portable_path(tmp_path / "repo2" / "x" / "y.json", repo) == ".../x/y.json"
    assert portable_path(f"{repo}/../elsewhere/x.json", repo) == ".../elsewhere/x.json"
    assert portable_path("results/a/../b", repo) == "results/a/../b"
    assert portable_path("x.json", repo) == "x.json"
    assert str(tmp_path) not in portable_path(tmp_path / "a" / "b" / "c", repo)


def test_a_command_line_loses_its_machine_paths(tmp_path):
    repo = tmp_path / "repo"
    argv = ["--model", "tiny", "--record", str(repo / "benchmarks" / "records" / "x.json"),
            "--run", "/home/me/runs/seed1/budget", "--wer", f"dense={repo}/results/d/r.json",
            "lora=/tmp/x/lora/results.json", "rel=results/a", "--repeats", "5", "a=b",
            "--out=/scratch/p/q/r"]
    assert portable_argv(argv, repo) == [
        "--model", "tiny", "--record", "benchmarks/records/x.json",
        "--run", ".../seed1/budget", "--wer", "dense=results/d/r.json",
        "lora=.../lora/results.json", "rel=results/a", "--repeats", "5", "a=b",
        "--out=.../q/r"]
    # a value holding "=" after the first one stays whole; an absolute path holding "=" too
    assert portable_argv(["w=/tmp/a=b/c.json", "/tmp/k=v/d.json"], repo) == \
        ["w=.../a=b/c.json", ".../k=v/d.json"]
    assert portable_argv([], repo) == []


def test_record_values_are_followed_into_lists_and_dicts(tmp_path):
    repo = tmp_path / "repo"
    results = {"ssl_hub": str(repo / "s3brain" / "backbones" / "tiny"),
               "data_folder": "/corpora/LibriSpeech/train",
               "wer_test_clean": 12.5, "seeds": [1986, 1987], "flag": True, "none": None,
               "folders": [str(repo / "a"), "/x/y/z", {"deep": ["/m/n/o", "keep/me"]}],
               "nested": {"inner": {"path": str(repo / "results" / "r")}},
               "pair": (str(repo / "t"), 3), "hub": "facebook/wav2vec2-base"}
    assert portable_values(results, repo) == {
        "ssl_hub": "s3brain/backbones/tiny", "data_folder": ".../LibriSpeech/train",
        "wer_test_clean": 12.5, "seeds": [1986, 1987], "flag": True, "none": None,
        "folders": ["a", ".../y/z", {"deep": [".../n/o", "keep/me"]}],
        "nested": {"inner": {"path": "results/r"}},
        "pair": ["t", 3], "hub": "facebook/wav2vec2-base"}
    assert results["ssl_hub"] == str(repo / "s3brain" / "backbones" / "tiny")  # not changed
    assert portable_values("/a/b/c", repo) == ".../b/c"
    assert portable_values(7, repo) == 7


def test_machine_facts():
    facts = machine_facts()
    assert set(facts) == {"cpu_count", "cpus_usable", "processor", "cpu_model", "machine",
                          "platform", "python", "torch", "onnxruntime", "transformers"}
    assert facts["cpu_count"] == os.cpu_count()
    assert facts["machine"] == platform.machine()
    assert facts["processor"] == platform.processor()
    assert facts["python"] == platform.python_version()
    if hasattr(os, "sched_getaffinity"):
        assert 1 <= facts["cpus_usable"] <= facts["cpu_count"]
    import onnxruntime
    import torch
    import transformers

    assert (facts["torch"], facts["onnxruntime"], facts["transformers"]) == (
        torch.__version__, onnxruntime.__version__, transformers.__version__)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        assert facts["cpu_model"]
        assert facts["cpu_model"] in cpuinfo.read_text()


def test_cpu_model_reads_the_first_model_name_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\n"
                    "model name\t: other\n")
    assert cpu_model(info) == "AMD EPYC 7B13"
    info.write_text("processor\t: 0\nHardware\t: x\n")
    assert cpu_model(info) is None
    assert cpu_model(tmp_path / "missing") is None
