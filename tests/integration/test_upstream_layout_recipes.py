"""``tools/upstream_layout.py --recipes``: a laid-out row run by SpeechBrain's recipe-test runner
from inside the tree, with the row's own debug flags, its files and performance check met (the
layout itself and the quick checks: ``tests/unit/test_upstream_layout.py``)."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import upstream_layout

pytestmark = pytest.mark.skipif(
    not (upstream_layout.DEFAULT_CHECKS / upstream_layout.CHECKS_TESTS).is_dir(),
    reason=f"no SpeechBrain checks at {upstream_layout.DEFAULT_CHECKS}")


@pytest.mark.parametrize("recipe, yaml, recipe_id, output, method_folder", [
    # (LibriSpeech's layout and checks: tests/unit/test_upstream_layout.py; its rows run from the
    # tree with `tools/upstream_layout.py --recipe LibriSpeech --recipes`, 16 min, not here)
    # SUPERB: the shared script copied as a file into a folder still named by its task
    ("SUPERB", "recipes/SUPERB/KS/hparams/weight_ft.yaml", "SUPERB_row_02",
     "SUPERB_KS_weight_ft", "recipes/SUPERB/S3Brain/KS"),
])
def test_a_laid_out_row_runs_from_the_tree(tmp_path, recipe, yaml, recipe_id, output,
                                           method_folder):
    tree = tmp_path / "tree"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "upstream_layout.py"), "--recipe", recipe,
         "--out", str(tree), "--recipes", "--filter", f"Hparam_file={yaml}", "--keep"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("upstream layout: pass (3 checks)")
    # the runner ran that row and no other
    assert [line.strip() for line in lines if "Running test" in line] == [
        f"(1/1) Running test for {recipe_id}..."]
    run = tree / "tests" / "tmp" / output
    assert (run / ".passed").is_file()  # the runner's mark: exit 0, files there, check met
    assert (run / "results.json").is_file()
    # the run used the tree's copies: the yaml it recorded, the script it saved
    laid_yaml = tree / method_folder / "hparams" / "weight_ft.yaml"
    assert str(laid_yaml) in (run / "hyperparams.yaml").read_text().splitlines()[1]
    assert (run / "train.py").read_bytes() == (tree / method_folder / "train.py").read_bytes()
