#!/usr/bin/env python3
"""Speaker identification (SUPERB SID) on a VoxCeleb1 folder, accuracy.

    python recipes/SUPERB/SID/train.py hparams/weight_ft.yaml
    python recipes/SUPERB/SID/train.py hparams/s3router.yaml --sparsity=0.05
    ... --data_folder=/data/VoxCeleb1 --ssl_hub=facebook/wav2vec2-base

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

from voxceleb_prepare import prepare_voxceleb1  # noqa: E402

from s3brain.utterance import UtteranceClassification, run_task  # noqa: E402


class SpeakerIdentification(UtteranceClassification):
    """One class per speaker of the training split."""

    targets = ("label",)
    slot_targets = ()


if __name__ == "__main__":
    sys.exit(run_task(sys.argv[1:], RECIPE_DIR, SpeakerIdentification, prepare_voxceleb1,
                      "voxceleb1"))
