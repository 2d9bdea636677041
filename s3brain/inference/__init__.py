"""SpeechBrain ``Pretrained`` interfaces of this project's inference folders
(``interfaces``: ``S3RouterASR``, ``UtteranceClassifier``) and the command line that
transcribes files with one (``python -m s3brain.inference.transcribe``).

``python -m s3brain.inference <run folder>`` exports a finished run as an inference folder
(``s3brain.deployment.export``); a plain CTC run's folder is served by SpeechBrain's own
``EncoderASR``::

    from speechbrain.inference.ASR import EncoderASR
    asr = EncoderASR.from_hparams(source="results/weight_ft/1986/inference", savedir="asr")
    asr.transcribe_file("speech.wav")

Names that lived here before the package was arranged in folders (``CTCEncoder``,
``Backbone``, ``export_inference``...: inference folders exported earlier name them in their
``hyperparams.yaml``) still resolve, with a ``DeprecationWarning``.
"""

import importlib
import warnings

from s3brain.inference.interfaces import S3RouterASR, UtteranceClassifier

__all__ = ["S3RouterASR", "UtteranceClassifier"]

#: Names of the former ``s3brain.inference`` module and where they live now.
_MOVED = {**{name: "s3brain.deployment.modules" for name in (
    "ENCODER_FILE", "TOKENIZER_FILE", "CLASSIFIER_FILE", "CTCLabels", "AudioNormalizer",
    "Backbone", "blank_padded", "CTCEncoder", "TaskHead", "TaskFile", "UtteranceModel")},
          **{name: "s3brain.deployment.export" for name in (
              "ExportError", "load_run", "deployed_backbone", "deployed_encoder",
              "export_inference", "export_after_run", "is_classifier_run",
              "load_classifier_run", "export_classifier", "export_run", "export_mask_bank",
              "main")}}


def __getattr__(name):
    """A name of the former module, from where it lives now (with a DeprecationWarning)."""
    if name not in _MOVED:
        raise AttributeError(f"module 's3brain.inference' has no attribute {name!r}")
    warnings.warn(f"s3brain.inference.{name} moved to {_MOVED[name]}.{name}: import it from "
                  f"there", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(_MOVED[name]), name)
