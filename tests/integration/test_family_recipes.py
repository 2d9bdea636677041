"""Debug recipe runs on the tiny random-init models of the backbone families and layouts
(``conftest.tiny_family_models``): the fewest that cover the recipe-level paths that once failed."""

import pytest
from conftest import REPO, run_recipe

# Recipe runs: the fewest that cover the recipe-level paths that failed (debug, tiny corpus).
RUNS = {
    # early exit (every block's output; exits read through the final layer norm) on WavLM large,
    # trained jointly: the yaml's SpecAugment overrides in training (WavLM's config lacks a key)
    "librispeech-early_exit-wavlm-large": (
        "LibriSpeech/train.py", "hparams/early_exit.yaml", ("wavlm", "large"),
        ["--lm_decoding=False", "--exit_training=joint", "--init_from=null"]),
    # a learned downsampler in front of a backbone whose CNN is frozen (HubertModel has no
    # freeze_feature_encoder)
    "librispeech-downsampling_conv-hubert-large": (
        "LibriSpeech/train.py", "hparams/downsampling_conv.yaml", ("hubert", "large"),
        ["--lm_decoding=False", "--ssl_frozen_steps=0"]),
    # the SUPERB head sized by the hidden states the backbone returns (LayerDrop off)
    "superb-ks-data2vec-audio": (
        "SUPERB/KS/train.py", "hparams/weight_ft.yaml", ("data2vec-audio", "base"), []),
}


@pytest.mark.parametrize("run", list(RUNS))
def test_recipe_debug_run(run, tiny_family_models, tiny_corpus, tmp_path):
    script, hparams, key, extra = RUNS[run]
    out = tmp_path / run
    result = run_recipe(hparams, "--synthetic_size=tiny", "--number_of_epochs=1",
                        "--cost_repeats=1", "--debug",
                        f"--ssl_hub={tiny_family_models[key]}", f"--output_folder={out}", *extra,
                        script=REPO / "recipes" / script, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "results.json").exists()
