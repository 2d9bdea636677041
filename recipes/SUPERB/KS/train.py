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

import speechbrain as sb  # noqa: E402
from speech_commands_prepare import prepare_speech_commands  # noqa: E402
from speechbrain.utils.distributed import if_main_process, run_on_main  # noqa: E402

from s3brain.backbone.audio import backbone_rate  # noqa: E402
from s3brain.deployment.export import export_after_run  # noqa: E402
from s3brain.deployment.model import cost_report  # noqa: E402
from s3brain.lobes.heads import build_head
from s3brain.training.experiment import (  # noqa: E402
    seeded_loader_options,
    setup_errors,
    setup_strategies,
    start_experiment,
)
from s3brain.training.finetuning import BackboneFineTuning  # noqa: E402
from s3brain.training.reporting import split_results, write_results
from s3brain.training.utterance import (  # noqa: E402
    ClassificationStats,
    dataio_prepare,
    prepare_task,
    summed_cross_entropy,
    target_ids,
)

#: Twelve classes in one target: the keywords, ``_unknown_``, ``_silence_``.
TARGETS = ("label",)


class KeywordSpotting(BackboneFineTuning):
    """Backbone (every hidden layer, as the strategies run it) -> SUPERB's head -> cross
    entropy; accuracy. ``BackboneFineTuning`` holds the strategies' hooks."""

    label_encoders = None  # {target: CategoricalEncoder}, to write the predictions

    def compute_forward(self, batch, stage):
        """Logits per target of the head over the backbone's hidden layers."""
        batch = batch.to(self.device)
        hiddens, wav_lens = self.backbone_features(batch, stage)
        return self.modules.head(hiddens, wav_lens)

    def compute_objectives(self, logits, batch, stage):
        """Cross entropy (with the strategies' terms); predictions kept at evaluation."""
        truth = target_ids(batch, TARGETS)
        loss = self.strategies_loss(summed_cross_entropy(logits, truth), logits, batch, stage)
        if stage != sb.Stage.TRAIN:
            self.classification_stats.append(logits, truth, batch.id)
        return loss

    def init_optimizers(self):
        """Adam for the head and for the backbone's trainable tensors (weights or mask scores);
        the backbone's waits ``ssl_frozen_steps`` updates."""
        self.init_backbone_optimizers(self.hparams.model_opt_class, self.hparams.ssl_opt_class,
                                      self.hparams.ssl_frozen_steps)

    def on_stage_start(self, stage, epoch=None):
        """New predictions; the strategies' ``before_eval`` (re-pruning) and statistics reset."""
        if stage != sb.Stage.TRAIN:
            self.classification_stats = ClassificationStats(TARGETS)
            self.strategies_before_eval(stage)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the stage; at VALID anneal and checkpoint (lowest error = 100 - accuracy)."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats.update(self.classification_stats.summarize())
        stats.update(self.strategy_stats(stage))
        if stage == sb.Stage.VALID:
            stats["error"] = 100.0 - stats["accuracy"]
            lrs = self.anneal(stats)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, **lrs}, train_stats=self.train_stats, valid_stats=stats)
            self.checkpointer.save_and_keep_only(
                meta={**self.checkpoint_meta(stats, "error"), "dev_accuracy": stats["accuracy"]},
                min_keys=["error"])
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats)
            self.test_stats = stats
            if if_main_process():  # each test utterance's predicted and true labels
                with open(Path(self.hparams.output_folder) / "predictions_test.csv", "w",
                          encoding="utf-8") as w:
                    self.classification_stats.write_predictions(w, self.label_encoders)


def main(argv):
    """Prepare, train, test and report one run.

    Arguments
    ---------
    argv : list of str
        The command line after the program name: the yaml, then overrides (``--sparsity=0.05``).

    Returns
    -------
    int
        The exit status (a one-line set-up error exits with 2).
    """
    with setup_errors():  # no backbone, missing data, bad keys: one line
        hparams, run_opts = start_experiment(argv, RECIPE_DIR)
        manifests = prepare_task(prepare_speech_commands, hparams["data_folder"],
                                 hparams["output_folder"], hparams["skip_prep"], "speech_commands",
                                 hparams["synthetic_seed"], hparams["synthetic_size"])
        train, valid, test, encoders = dataio_prepare(
            manifests, TARGETS, hparams["save_folder"], backbone_rate(hparams["ssl"]),
            hparams["sorting"])
        # the head, sized once the label sets are known: trained by the head optimizer (model),
        # checkpointed, and saved with the task's masks
        head = build_head(hparams["ssl"], encoders, hparams["projection"])
        hparams["model"] = hparams["modules"]["head"] = head
        hparams["checkpointer"].add_recoverable("model", head)
        # none for weight fine-tuning (its yaml lists no strategies)
        strategies = setup_strategies(hparams.get("strategies"), hparams)

    brain = KeywordSpotting(modules=hparams["modules"], hparams=hparams, run_opts=run_opts,
                            checkpointer=hparams["checkpointer"])
    brain.label_encoders = encoders
    brain.fit(hparams["epoch_counter"], train, valid,
              train_loader_kwargs=seeded_loader_options(hparams["train_dataloader_opts"],
                                                        hparams["seed"]),
              valid_loader_kwargs=hparams["valid_dataloader_opts"])
    brain.evaluate(test, min_key="error", test_loader_kwargs=hparams["test_dataloader_opts"])

    results = {"strategy": hparams["strategy"], "task": hparams["task"],
               "ssl_hub": str(hparams["ssl_hub"]), "ssl_init": hparams["ssl"].ssl_init,
               "train_seconds": brain.train_seconds}
    extra = [m for k, m in hparams["modules"].items() if k not in ("ssl", "head")]
    cost = cost_report(hparams["ssl"], head, strategies, seconds=hparams["cost_seconds"],
                       repeats=hparams["cost_repeats"], threads=hparams["cost_threads"],
                       all_layers=True, extra=extra)
    write_results(results, split_results(brain.test_stats, "test"), cost, strategies,
                  hparams["output_folder"], hparams["ssl"], head, primary="accuracy_test",
                  higher_is_better=True, info_keys=("task",))
    if not run_opts["debug"]:  # --debug keeps its checkpoints in a temporary folder
        # <output_folder>/inference: the UtteranceClassifier interface serves the run
        run_on_main(export_after_run, args=[hparams["output_folder"]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
