"""CommonVoice phoneme recognition: per-language S3-Router runs served by one mask bank."""

import json
import sys

import pytest
from conftest import REPO, assert_results_match_error_files, logged_value, run_recipe

CV = REPO / "recipes" / "CommonVoice"
sys.path.insert(0, str(CV))
import multilingual  # noqa: E402


@pytest.fixture(scope="module")
def language_runs(tiny_corpus, tmp_path_factory):
    runs = {}
    for language in ("en", "de"):
        out = tmp_path_factory.mktemp(f"cv_{language}")
        proc = run_recipe(str(CV / "hparams" / "s3router.yaml"), "--synthetic_size=tiny",
                          f"--language={language}", "--number_of_epochs=2", "--cost_repeats=1",
                          f"--output_folder={out}", script=CV / "train.py")
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[language] = out
    return runs


#: the seeded reference runs at this code (seed 1986, tiny corpus, 2 epochs): the test PER and
#: the logged train loss of epoch 2 and test loss. English emits one phoneme ("t") per test
#: utterance (160 errors in 164 phonemes), German only blanks (100: a rate that cannot move,
#: hence the losses, which do)
REFERENCE = {"en": {"per_test": 97.56, "train loss": 9.91, "test loss": 6.50},
             "de": {"per_test": 100.0, "train loss": 9.61, "test loss": 4.33}}


def test_each_language_learns_its_own_phoneme_set(language_runs):
    sets = {}
    for language, out in language_runs.items():
        results = json.loads((out / "results.json").read_text())
        assert results["language"] == language
        assert set(assert_results_match_error_files(out)) == {"per_test"}
        reference = REFERENCE[language]
        # margin 0.3: less than one phoneme of the test split (100 / 164 = 0.61), so the same
        # count of errors; 0.05 on the losses: the log's last digit, another thread count's sums
        assert abs(results["per_test"] - reference["per_test"]) <= 0.3, language
        assert abs(logged_value(out, "epoch: 2", "train loss") - reference["train loss"]) <= 0.05
        assert abs(logged_value(out, "Epoch loaded", "test loss") - reference["test loss"]) <= 0.05
        labels = (out / "save" / "label_encoder.txt").read_text()
        sets[language] = {line.split(" => ")[0] for line in labels.splitlines() if " => " in line}
    assert sets["en"] != sets["de"]
    assert "'ð'" in sets["en"] and "'ð'" not in sets["de"]


def test_one_bank_serves_every_language_as_its_own_run(language_runs, tmp_path):
    rows, storage = multilingual.main([str(language_runs["en"]), str(language_runs["de"]),
                                       "--out", str(tmp_path)])
    for row in rows:
        assert row["PER (bank)"] == pytest.approx(row["PER (own run)"], abs=0.01)
    assert storage["languages"] == 2
    assert storage["bank_total_bytes"] < storage["separate_models_bytes"]
    assert (tmp_path / "multilingual.md").exists()


def test_a_corpus_size_without_common_voice_is_refused_before_synthesis(tmp_path):
    """The WordNet sizes speak only LibriSpeech: one line, nothing synthesised."""
    proc = run_recipe(str(CV / "hparams" / "weight_ft.yaml"), "--synthetic_size=realtext-tiny",
                      f"--output_folder={tmp_path / 'run'}", "--debug", script=CV / "train.py",
                      env={"S3BRAIN_DATA": str(tmp_path / "corpora")})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "'realtext-tiny' has no Common Voice part" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "corpora").exists()
