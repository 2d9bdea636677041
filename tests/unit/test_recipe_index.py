"""tests/recipes/<Dataset>.csv in SpeechBrain's recipe-test format: complete (each row's debug run:
``tests/integration/test_recipe_rows.py``)."""

from conftest import REPO, recipe_index_rows


def test_every_yaml_is_listed_and_every_listed_file_exists():
    rows = recipe_index_rows()
    listed = {row["Hparam_file"] for _, row in rows}
    for yaml in sorted((REPO / "recipes").rglob("hparams/*.yaml")):
        assert str(yaml.relative_to(REPO)) in listed, f"{yaml} missing from tests/recipes/"
    for dataset, row in rows:
        assert row["Dataset"] == dataset
        for key in ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file"):
            if row[key]:
                assert (REPO / row[key]).is_file(), f"{row[key]} listed but missing"
