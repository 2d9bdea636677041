"""The backbone and its families: the one place that spells transformers' attribute paths.

- ``wrapper``: loading any wav2vec2, HuBERT, WavLM or data2vec-audio checkpoint (hub name or
  folder) into SpeechBrain's wrapper, the shipped default backbone, the wrapper's forward;
- ``families``: the family table and the opened-up forward strategies run block by block;
- ``audio``: any file's rate, channels and container read as the backbone wants it;
- ``shrunk_modeling``: the physically shrunk models that transformers loads alone;
- ``tiny_models``: tiny random models of every family and layout, for tests.

The loading functions are importable from here (``!apply:s3brain.backbone.load_ssl`` in the
recipes' yamls).
"""

from s3brain.backbone.wrapper import (
                                      DEFAULT_BACKBONE,
                                      BackboneUnavailableError,
                                      default_backbone,
                                      hidden_layer_count,
                                      hidden_size,
                                      load_ssl,
                                      wrapper_forward,
)

__all__ = ["DEFAULT_BACKBONE", "BackboneUnavailableError", "default_backbone",
           "hidden_layer_count", "hidden_size", "load_ssl", "wrapper_forward"]
