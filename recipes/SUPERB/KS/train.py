#!/usr/bin/env python3
"""Keyword spotting (SUPERB KS) on a Speech Commands folder: 10 keywords, _unknown_ and _silence_, accuracy.

    python recipes/SUPERB/KS/train.py hparams/weight_ft.yaml
    python recipes/SUPERB/KS/train.py hparams/s3router.yaml --sparsity=0.05
    ... --data_folder=/data/speech_commands_v0.02 --ssl_hub=facebook/wav2vec2-base

With the yaml defaults the data are the synthetic task of ``s3brain.data.superb`` (generated on
first use) and the backbone the project's small wav2vec2. The head is SUPERB's: a learned
weighted sum of every hidden layer, a projection, mean pooling, a linear classifier per target.
Each run writes ``results.json`` (test metrics, cost, storage per task) and, for S3-Router, the
task's ``task_mask.safetensors`` for the mask bank.
"""

import sys
from pathlib import Path

RECIPE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(RECIPE_DIR))

from speechbrain.utils.distributed import run_on_main  # noqa: E402

from s3brain.data import superb  # noqa: E402
from s3brain.utterance import UtteranceClassification, run_task  # noqa: E402


class KeywordSpotting(UtteranceClassification):
    """Twelve classes: the keywords, ``_unknown_``, ``_silence_``."""

    targets = ("label",)
    slot_targets = ()


def prepare(hparams):
    """Generate the synthetic task if it is the data folder, then write the manifests."""
    from speech_commands_prepare import prepare_speech_commands

    default = superb.task_dir("speech_commands", hparams["synthetic_seed"], hparams["synthetic_size"])
    if Path(hparams["data_folder"]).resolve() == default.resolve():
        run_on_main(superb.generate_superb, kwargs={
            "seed": hparams["synthetic_seed"], "size": hparams["synthetic_size"]})
    kwargs = {"data_folder": hparams["data_folder"], "save_folder": hparams["output_folder"],
              "skip_prep": hparams["skip_prep"]}
    run_on_main(prepare_speech_commands, kwargs=kwargs)
    return prepare_speech_commands(**{**kwargs, "skip_prep": True})


if __name__ == "__main__":
    sys.exit(run_task(sys.argv[1:], RECIPE_DIR, KeywordSpotting, prepare))
