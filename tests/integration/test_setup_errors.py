"""Every recipe script refuses a wrong input in one ``ERROR:`` line, exit status 2, before any
work: a mistyped override before the yaml is loaded (no data prepared), a hub name without
network after one connection attempt (no retries). The package's command-line tools do the same
for a folder that is not theirs and a mask-bank task that is not there."""

import json
import shutil

import pytest
from conftest import REPO, run_python, run_recipe

RECIPES = REPO / "recipes"
#: (script, yaml) of every recipe script
SCRIPTS = [
    (RECIPES / "LibriSpeech" / "train.py", "hparams/s3router.yaml"),
    (RECIPES / "CommonVoice" / "train.py", "hparams/weight_ft.yaml"),
    (RECIPES / "SUPERB" / "KS" / "train.py", "hparams/weight_ft.yaml"),
    (RECIPES / "LibriSpeech" / "train_salad.py", "hparams/salad/detector.yaml"),
    (RECIPES / "LibriSpeech" / "pretrain" / "train.py", "hparams/wav2vec2_tiny.yaml"),
]

#: runs the recipe given first as a machine without network and without HF_HUB_OFFLINE would,
#: writing the host of every DNS look-up (every connection attempt) to the file given second
NO_NETWORK = '''
import json, os, runpy, socket, sys
import huggingface_hub.constants

huggingface_hub.constants.HF_HUB_OFFLINE = False
lookups = []


def no_network(host, *args, **kwargs):
    lookups.append(host)
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


socket.getaddrinfo = no_network
recipe, log = sys.argv[1], sys.argv[2]
sys.argv = [recipe, *sys.argv[3:]]
sys.path.insert(0, os.path.dirname(recipe))
try:
    runpy.run_path(recipe, run_name="__main__")
finally:
    with open(log, "w") as f:
        json.dump(lookups, f)
'''


def test_mistyped_override_is_one_line_before_any_data(tmp_path):
    out = tmp_path / "run"
    proc = run_recipe("recipes/LibriSpeech/hparams/s3router.yaml", "--sparsty=0.1", "--debug",
                      "--synthetic_size=tiny", f"--output_folder={out}", timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [("ERROR: --sparsty=0.1: recipes/LibriSpeech/hparams/"
                                         "s3router.yaml has no key 'sparsty' (did you mean "
                                         "'sparsity'?)")]
    assert not out.exists()  # no manifest, no log, no folder


@pytest.mark.parametrize("script, yaml", SCRIPTS[1:], ids=lambda x: str(x).split("recipes/")[-1])
def test_every_recipe_refuses_a_mistyped_override(tmp_path, script, yaml):
    out = tmp_path / "run"
    proc = run_recipe(yaml, "--sparsty=0.1", "--debug", f"--output_folder={out}",
                      cwd=script.parent, script=script, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [f"ERROR: --sparsty=0.1: {yaml} has no key 'sparsty'"
                      + (" (did you mean 'sparsity'?)" if "sparsity" in
                         (script.parent / yaml).read_text() else "")]
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize("script, yaml", SCRIPTS[:4], ids=lambda x: str(x).split("recipes/")[-1])
def test_unreachable_hub_is_one_line_after_one_attempt(tmp_path, tiny_corpus, script, yaml):
    wrapper, log = tmp_path / "no_network.py", tmp_path / "lookups.json"
    wrapper.write_text(NO_NETWORK)
    proc = run_recipe(script, log, yaml, "--ssl_hub=facebook/wav2vec2-base", "--debug",
                      "--synthetic_size=tiny", f"--output_folder={tmp_path / 'run'}",
                      cwd=script.parent, script=wrapper, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("ERROR: Cannot load ssl_hub='facebook/wav2vec2-base': ")
    assert "the Hugging Face hub cannot be reached (huggingface.co:443" in lines[0]
    assert "--ssl_hub=/path/to/model" in lines[0]
    assert json.loads(log.read_text()) == ["huggingface.co"]  # one attempt, no retry


#: exported folders kept as test data: a mask bank (tasks a and b), a plain inference folder
FIXTURE = REPO / "tests" / "fixtures" / "exported_before_move"


@pytest.mark.parametrize("folder, task, error", [
    ("bank", "nope", "ERROR: no task 'nope' in the bank; loaded: ['a', 'b']"),
    ("early_exit", "a", "ERROR: --task a: {folder} is not a mask bank"),
])
def test_transcribe_refuses_a_wrong_task_before_any_file(tmp_path, folder, task, error):
    copy = shutil.copytree(FIXTURE / folder, tmp_path / folder)
    proc = run_python("-m", "s3brain.inference.transcribe", copy, FIXTURE / "utt0.flac",
                      "--task", task, "--no-progress", timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [error.format(folder=copy)]
    assert proc.stdout == ""


@pytest.mark.parametrize("argv", [
    ["-m", "s3brain.inference", "{tmp}"],
    ["-m", "s3brain.inference.transcribe", "{tmp}", "a.wav"],
])
def test_command_line_tools_refuse_a_folder_in_one_line(tmp_path, argv):
    proc = run_python(*[a.format(tmp=tmp_path) for a in argv], timeout=300)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(f"ERROR: {tmp_path}: no hyperparams.yaml")
