"""The early-exit recipe: two-step exit heads on a fine-tuned model, thresholds at the extremes."""

import json

import pytest
from conftest import RECIPE, run_recipe

TINY = ["--synthetic_size=tiny", "--number_of_epochs=1", "--cost_repeats=1"]


@pytest.fixture(scope="module")
def finetuned(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    proc = run_recipe(str(RECIPE / "hparams" / "weight_ft.yaml"), *TINY, "--lm_decoding=False",
                      f"--output_folder={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("criterion,threshold,block", [("entropy", 1e9, 1), ("entropy", 0, 4),
                                                       ("similarity", -2, 1)])
def test_exit_block_follows_the_threshold(finetuned, tmp_path, criterion, threshold, block):
    proc = run_recipe(str(RECIPE / "hparams" / "early_exit.yaml"), *TINY,
                      f"--init_from={finetuned}", f"--exit_criterion={criterion}",
                      f"--exit_threshold={threshold}", f"--output_folder={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mean_exit_block_test_clean"] == block
    assert results["exit_rtf_test_clean"] > 0
    assert results["params_trainable"] == 3 * (192 * 29 + 29)  # only the exit heads learn
