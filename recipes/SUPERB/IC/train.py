#!/usr/bin/env python3
"""Intent classification with slots (SUPERB IC) on a Fluent Speech Commands folder: action,
object and location per utterance; intent accuracy (all three right) and slot F1.

    python recipes/SUPERB/IC/train.py hparams/weight_ft.yaml
    python recipes/SUPERB/IC/train.py hparams/s3router.yaml --sparsity=0.05
    ... --data_folder=/data/fluent_speech_commands_dataset --ssl_hub=facebook/wav2vec2-base

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

from fluent_speech_commands_prepare import prepare_fluent_speech_commands  # noqa: E402

from s3brain.utterance import UtteranceClassification, run_task  # noqa: E402


class IntentClassification(UtteranceClassification):
    """Three targets; object and location are the slots scored by F1."""

    targets = ("action", "object", "location")
    slot_targets = ("object", "location")


if __name__ == "__main__":
    sys.exit(run_task(sys.argv[1:], RECIPE_DIR, IntentClassification, prepare_fluent_speech_commands,
                      "fluent_speech_commands"))
