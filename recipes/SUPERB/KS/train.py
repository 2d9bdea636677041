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

from speech_commands_prepare import prepare_speech_commands  # noqa: E402

from s3brain.utterance import UtteranceClassification, run_task  # noqa: E402


class KeywordSpotting(UtteranceClassification):
    """Twelve classes: the keywords, ``_unknown_``, ``_silence_``."""

    targets = ("label",)
    slot_targets = ()


if __name__ == "__main__":
    sys.exit(run_task(sys.argv[1:], RECIPE_DIR, KeywordSpotting, prepare_speech_commands,
                      "speech_commands"))
