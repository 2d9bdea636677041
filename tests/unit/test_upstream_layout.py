"""``tools/upstream_layout.py``: the recipe laid out at SpeechBrain's paths, its rows following
it, and SpeechBrain's own consistency and docstring checks passing on the tree, failing on a
broken one. The laid-out rows themselves run under SpeechBrain's recipe-test runner with
``tools/upstream_layout.py --recipe LibriSpeech --recipes`` (16 min on the 2-core machine, so
not in the suite)."""

import csv
import shutil
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import upstream_layout

CHECKS = upstream_layout.DEFAULT_CHECKS
needs_checks = pytest.mark.skipif(
    not (CHECKS / upstream_layout.CHECKS_TESTS).is_dir(),
    reason=f"no SpeechBrain checks at {CHECKS}")
METHOD = "recipes/LibriSpeech/ASR/S3Brain"


def read_rows(path):
    """The rows of a recipe CSV, as dicts."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """LibriSpeech laid out, with SpeechBrain's checks (once for the module: read only)."""
    if not (CHECKS / upstream_layout.CHECKS_TESTS).is_dir():
        pytest.skip(f"no SpeechBrain checks at {CHECKS}")
    out = tmp_path_factory.mktemp("upstream") / "tree"
    summary = upstream_layout.lay_out("LibriSpeech", out, "S3Brain", CHECKS)
    return out, summary


def test_the_recipe_is_at_speechbrains_paths(tree):
    out, summary = tree
    for rel in ("train.py", "train_salad.py", "librispeech_prepare.py", "README.md",
                "extra_requirements.txt", "hparams/weight_ft.yaml", "hparams/s3router.yaml",
                "hparams/salad/detector.yaml", "pretrain/train.py",
                "pretrain/hparams/wav2vec2_tiny.yaml", "pretrain/README.md"):
        assert (out / METHOD / rel).is_file(), rel
    for rel in ("tests/recipes/LibriSpeech.csv", "tests/__init__.py",
                "tests/consistency/test_recipe.py", "tests/consistency/test_yaml.py",
                "tests/utils/check_docstrings.py", "tests/utils/recipe_tests.py"):
        assert (out / rel).is_file(), rel
    # every file of the recipe folder, at the same place below the method folder, unchanged
    source = REPO / "recipes" / "LibriSpeech"
    files = upstream_layout.recipe_files("recipes/LibriSpeech")
    assert len(files) > 20 and "recipes/LibriSpeech/train.py" in files
    for rel in files:
        laid = out / METHOD / (REPO / rel).relative_to(source)
        assert laid.read_bytes() == (REPO / rel).read_bytes(), rel
    # nothing else in recipes/: one method folder, no dataset-level leftovers
    assert sorted(p.relative_to(out).as_posix() for p in (out / "recipes").rglob("*")
                  if p.is_file() and p.name != "extra_requirements.txt") == \
        sorted(f"{METHOD}/{(REPO / rel).relative_to(source).as_posix()}" for rel in files)
    assert summary["folders"] == [("recipes/LibriSpeech", METHOD, len(files) + 1)]
    # the SpeechBrain checks are the shared ones, unchanged
    shared = CHECKS / upstream_layout.CHECKS_TESTS / "utils" / "recipe_tests.py"
    assert (out / "tests/utils/recipe_tests.py").read_bytes() == shared.read_bytes()


def test_every_row_follows_the_recipe_and_names_files_of_the_tree(tree):
    out, summary = tree
    ours = read_rows(REPO / "tests" / "recipes" / "LibriSpeech.csv")
    laid = read_rows(out / "tests" / "recipes" / "LibriSpeech.csv")
    assert summary["rows"] == len(laid) == len(ours) > 20
    for mine, theirs in zip(ours, laid):
        for field in upstream_layout.PATH_FIELDS:
            assert theirs[field].startswith(METHOD + "/"), theirs[field]
            assert (out / theirs[field]).is_file(), theirs[field]
            assert theirs[field] == mine[field].replace("recipes/LibriSpeech/", METHOD + "/")
        # the same run: the flags and checks are the row's own, the runs write under tests/tmp/
        assert theirs["test_debug_flags"] == mine["test_debug_flags"]
        assert theirs["test_debug_checks"] == mine["test_debug_checks"]
        [folder] = upstream_layout.output_folders(theirs["test_debug_flags"])
        assert folder.startswith("tests/tmp/LibriSpeech_")
        assert "recipes/LibriSpeech/README.md" not in theirs["performance"]
    # every yaml of the laid-out recipe has its row (what SpeechBrain's test_recipe_list wants)
    yamls = {p.relative_to(out).as_posix() for p in (out / METHOD).rglob("*.yaml")}
    assert yamls == {row["Hparam_file"] for row in laid}


def test_extra_requirements_name_s3brain_and_what_speechbrain_lacks(tree):
    out, summary = tree
    lines = (out / METHOD / "extra_requirements.txt").read_text().splitlines()
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == summary["requirements"]
    assert requirements[0].startswith("s3brain")
    names = [upstream_layout.requirement_name(r) for r in requirements]
    assert {"transformers", "safetensors", "onnxruntime"} <= set(names)
    # SpeechBrain itself, and what it already requires, are not repeated
    assert not {"speechbrain", "torch", "torchaudio", "hyperpyyaml", "scipy"} & set(names)


def test_superb_tasks_get_their_script_as_a_file_in_a_folder_named_by_the_task(tmp_path):
    out = tmp_path / "tree"
    upstream_layout.lay_out("SUPERB", out, "S3Brain")
    assert not [p for p in out.rglob("*") if p.is_symlink()]
    shared = (REPO / "recipes" / "SUPERB" / "utterance_train.py").read_bytes()
    rows = read_rows(out / "tests" / "recipes" / "SUPERB.csv")
    assert {row["Script_file"] for row in rows} == {
        f"recipes/SUPERB/S3Brain/{task}/train.py" for task in ("KS", "SID", "IC", "PR")}
    for row in rows:
        script = out / row["Script_file"]
        assert script.is_file() and not script.is_symlink()
        assert script.read_bytes() == shared
        for field in upstream_layout.PATH_FIELDS:
            assert (out / row[field]).is_file(), row[field]


def test_commonvoice_brings_the_librispeech_scripts_its_rows_use(tmp_path):
    out = tmp_path / "tree"
    summary = upstream_layout.lay_out("CommonVoice", out, "S3Brain")
    assert [target for _, target, _ in summary["folders"]] == [
        "recipes/CommonVoice/ASR/S3Brain", "recipes/LibriSpeech/ASR/S3Brain"]
    rows = read_rows(out / "tests" / "recipes" / "CommonVoice.csv")
    assert "recipes/LibriSpeech/ASR/S3Brain/train_salad.py" in {r["Script_file"] for r in rows}
    assert all((out / row[f]).is_file() for row in rows for f in upstream_layout.PATH_FIELDS)


@needs_checks
def test_speechbrains_checks_pass_on_the_tree(tree):
    out, _ = tree
    passed, output, _ = upstream_layout.consistency_check(out)
    assert passed, output
    assert "5 passed" in output  # test_recipe.py's four tests and test_yaml.py's one
    passed, output, _ = upstream_layout.docstring_check(out)
    assert passed, output
    assert f"Checking ./{METHOD}/train.py" in output


@needs_checks
def test_a_broken_layout_fails_the_checks(tree, tmp_path):
    out = tmp_path / "broken"
    shutil.copytree(tree[0], out)
    index = out / "tests" / "recipes" / "LibriSpeech.csv"
    rows = read_rows(index)
    columns = list(rows[0])
    # a row naming a script that is not there
    rows.append({**rows[0], "Script_file": f"{METHOD}/missing_train.py"})
    # a yaml without a row
    shutil.copy(out / METHOD / "hparams" / "lora.yaml", out / METHOD / "hparams" / "unlisted.yaml")
    upstream_layout.write_index(index, columns, rows)
    passed, output, _ = upstream_layout.consistency_check(out)
    assert not passed
    assert f"The file {METHOD}/missing_train.py listed in LibriSpeech.csv does not exist" in output
    assert f"The file {METHOD}/hparams/unlisted.yaml is not listed in LibriSpeech.csv" in output
    # a function without a docstring in a laid-out script
    with open(out / METHOD / "librispeech_prepare.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef undocumented():\n    return 1\n")
    passed, output, _ = upstream_layout.docstring_check(out)
    assert not passed
    assert "The function undocumented" in output


def test_the_command_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert upstream_layout.main(["--recipe", "LibriSpeech", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"ERROR: {tmp_path} exists and is not an empty")
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_filters_select_rows_by_the_runners_fields(tmp_path):
    places = {"LibriSpeech": METHOD}
    columns = ["Task", "Hparam_file"]
    # a file given as this repository names it is the laid-out one; a field's values are
    # alternatives, fields must all match (run_recipe_tests's filters_fields and filters)
    assert upstream_layout.parse_filters(
        ["Hparam_file=recipes/LibriSpeech/hparams/weight_ft.yaml",
         f"Hparam_file={METHOD}/hparams/lora.yaml", "Task=ASR-CTC"], columns, places) == (
        ["Hparam_file", "Task"],
        [[f"{METHOD}/hparams/weight_ft.yaml", f"{METHOD}/hparams/lora.yaml"], "ASR-CTC"])
    with pytest.raises(upstream_layout.LayoutError, match="FIELD one of Task, Hparam_file"):
        upstream_layout.parse_filters(["Hparams=x"], columns, places)
    out = tmp_path / "tree"
    assert upstream_layout.main(["--recipe", "LibriSpeech", "--out", str(out),
                                 "--filter", "Task=ASR-CTC"]) == 2  # without --recipes
    assert not out.exists()
