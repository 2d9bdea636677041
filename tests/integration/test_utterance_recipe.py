"""The SUPERB tasks' one training script (``recipes/SUPERB/utterance_train.py``, each task
folder's ``train.py`` a link to it) and the training-loop hooks of the strategies in its Brain."""

import csv
import importlib.util
import json
import sys

import torch
from conftest import REPO, run_python, run_recipe

SUPERB = REPO / "recipes" / "SUPERB"
SHARED = SUPERB / "utterance_train.py"


def shared_script():
    """The shared script as a module (the recipe folder it puts on the path taken off again)."""
    spec = importlib.util.spec_from_file_location("utterance_train", SHARED)
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


def test_every_superb_task_folder_runs_the_shared_script():
    """Each folder with hparams is a task of the table: its train.py is the shared script, its
    prepare script (the recipe index's Data_prep_file) holds the table's prepare function."""
    folders = {yaml.parent.parent for yaml in SUPERB.glob("*/hparams/*.yaml")}
    table = shared_script().TASKS
    assert {folder.name for folder in folders} == set(table)
    with open(REPO / "tests" / "recipes" / "SUPERB.csv", encoding="utf-8") as f:
        listed = {(row["Script_file"], row["Data_prep_file"]) for row in csv.DictReader(f)}
    for folder in folders:
        assert (folder / "train.py").resolve() == SHARED.resolve()
        task = table[folder.name]
        prepare = folder / f"{task.prepare_module}.py"
        assert f"\ndef {task.prepare_function}(" in prepare.read_text(encoding="utf-8")
        assert {(str((folder / "train.py").relative_to(REPO)), str(prepare.relative_to(REPO)))} \
            == {row for row in listed if row[0].startswith(f"recipes/SUPERB/{folder.name}/")}


def test_the_shared_script_started_outside_a_task_folder_says_what_to_run():
    proc = run_python(SHARED, "KS/hparams/weight_ft.yaml")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("ERROR: ")
    assert "recipes/SUPERB/KS" in proc.stderr


def test_utterance_brain_runs_the_pruning_hooks(tiny_corpus, tmp_path):
    """PARP in a SUPERB recipe: re-pruned before every evaluation, so the checkpoint that was
    evaluated has exactly the target sparsity even though its zeroed weights kept training."""
    recipe = REPO / "recipes" / "SUPERB" / "KS"
    yaml = tmp_path / "parp.yaml"
    yaml.write_text((recipe / "hparams" / "weight_ft.yaml").read_text() + """
strategies:
    - !new:s3brain.strategies.Pruning
        schedule: !new:s3brain.strategies.pruning.schedules.PruneAdjustReprune
            sparsity: 0.5
            interval_steps: 1000  # never during these few steps: only before_eval re-prunes
""")
    out = tmp_path / "run"
    proc = run_recipe(str(yaml), "--synthetic_size=tiny", "--number_of_epochs=1",
                      "--cost_repeats=1", "--ssl_frozen_steps=0", f"--output_folder={out}",
                      script=recipe / "train.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["sparsity"] == 0.5
    ckpt = next((out / "save").glob("CKPT*"))
    state = torch.load(ckpt / "ssl.ckpt", map_location="cpu")
    weights = [v for k, v in state.items() if k.endswith(".weight") and v.dim() == 2
               and ".encoder.layers." in k and "layer_norm" not in k]
    assert weights
    for w in weights:  # per layer, exactly half zero
        assert abs((w == 0).sum().item() - w.numel() / 2) <= 1, w.shape
