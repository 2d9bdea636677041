"""s3brain: SpeechBrain recipes and the library behind them for cheaper fine-tuning and
inference of speech SSL backbones (wav2vec2, HuBERT, WavLM, data2vec-audio).

The package in folders by concern (CONTRIBUTING.md draws the house; each folder may import only
the ones listed after it):

- ``utils``: results format, checkpoints, FLOPs and latency, deprecation redirects (nothing);
- ``data``: the embedded synthetic corpora and manifests (utils);
- ``backbone``: loading any wav2vec2/HuBERT/WavLM/data2vec-audio, the family table, the
  opened-up forward, audio reading, tiny models (utils);
- ``lobes``: the task heads (backbone, utils);
- ``strategies``: the ``Strategy`` protocol and one module (or folder) per method: its
  mechanism, its strategy class, how it is deployed and exported (backbone, utils);
- ``deployment``: the deployed model built once per run, its cost, int8, the inference folder
  (strategies, lobes, backbone, utils);
- ``training``: experiment plumbing, the Brain base, CTC and utterance tasks, LM, pretraining
  (deployment, strategies, lobes, data, backbone, utils);
- ``inference``: SpeechBrain ``Pretrained`` interfaces (deployment, strategies, lobes, backbone,
  utils);
- ``compare``: launching runs, collecting their results, tables, plots, statistics (backbone,
  utils).
"""

from s3brain.utils.deprecation import redirect

#: Module paths before the package was arranged in folders -> (where most names went, names
#: that went elsewhere or were renamed). Inference folders exported before the move name
#: classes by these paths in their hyperparams.yaml.
MOVED = {
    "s3brain.report": ("s3brain.deployment.model", {
        "split_results": "s3brain.training.reporting", "write_results": "s3brain.training.reporting",
        "summary": "s3brain.training.reporting"}),
    "s3brain.ctc": ("s3brain.training.ctc", {
        "early_exit_of": "s3brain.strategies.early_exit",
        "exit_outputs": "s3brain.strategies.early_exit",
        "with_exit_loss": "s3brain.strategies.early_exit",
        "decode_at_exits": "s3brain.strategies.early_exit",
        "token_labels": "s3brain.deployment.modules"}),
    "s3brain.experiment": ("s3brain.training.experiment", {
        "load_finetuned": "s3brain.utils.checkpoint", "unwrapped": "s3brain.utils.checkpoint"}),
    "s3brain.token_merging": ("s3brain.strategies.token_merging.merging", {
        "BetweenBlocks": "s3brain.strategies.token_merging.base",
        "WrappedBackbone": "s3brain.strategies.token_merging.base",
        "merge_counts": "s3brain.strategies.token_merging.base",
        "nominal_kept_share": "s3brain.strategies.token_merging.base",
        "merge_ratio_for": "s3brain.strategies.token_merging.base"}),
    "s3brain.adaptive_skip": ("s3brain.strategies.token_merging.adaptive_skip", {}),
    "s3brain.families": ("s3brain.backbone.families", {}),
    "s3brain.audio": ("s3brain.backbone.audio", {}),
    "s3brain.shrunk_modeling": ("s3brain.backbone.shrunk_modeling", {}),
    "s3brain.tiny_models": ("s3brain.backbone.tiny_models", {}),
    "s3brain.results": ("s3brain.utils.results", {}),
    "s3brain.checkpoint": ("s3brain.utils.checkpoint", {}),
    "s3brain.efficiency": ("s3brain.utils.efficiency", {}),
    "s3brain.finetuning": ("s3brain.training.finetuning", {}),
    "s3brain.utterance": ("s3brain.training.utterance", {
        "WeightedLayerSum": "s3brain.lobes.heads", "UtteranceHead": "s3brain.lobes.heads",
        "build_head": "s3brain.lobes.heads"}),
    "s3brain.lm": ("s3brain.training.lm", {}),
    "s3brain.pretraining": ("s3brain.training.pretraining", {}),
    "s3brain.quantization": ("s3brain.deployment.int8", {}),
    "s3brain.masks": ("s3brain.strategies.s3router.masks", {}),
    "s3brain.mask_bank": ("s3brain.strategies.s3router.mask_bank", {}),
    "s3brain.analysis": ("s3brain.strategies.s3router.analysis", {}),
    "s3brain.pruning": ("s3brain.strategies.pruning.schedules", {}),
    "s3brain.structured": ("s3brain.strategies.pruning.structured", {}),
    "s3brain.top_blocks": ("s3brain.strategies.top_blocks", {}),
    "s3brain.transcribe": ("s3brain.inference.transcribe", {}),
    "s3brain.stats": ("s3brain.compare.stats", {}),
    # the mechanisms' classes renamed where they clashed with their strategies' names
    "s3brain.salad": ("s3brain.strategies.token_dropping", {
        "TokenDropping": "s3brain.strategies.token_dropping:TokenDropper"}),
    "s3brain.adapters": ("s3brain.strategies.adapters", {
        "LoRA": "s3brain.strategies.adapters:LoRALinear",
        "Adapters": "s3brain.strategies.adapters:HoulsbyAdapters"}),
    "s3brain.downsampling": ("s3brain.strategies.downsampling", {}),
    "s3brain.early_exit": ("s3brain.strategies.early_exit", {}),
}

for _old, (_new, _names) in MOVED.items():
    redirect(_old, _new, _names)
