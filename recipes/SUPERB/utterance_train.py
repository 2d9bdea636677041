#!/usr/bin/env python3
"""The training script of the four SUPERB utterance-level tasks. Each task folder's ``train.py``
is a link to this file (SpeechBrain recipes share their ``*_prepare.py`` the same way), and the
folder it is started from says which task runs (``TASKS``):

- ``KS``: keyword spotting (SUPERB KS) on a Speech Commands folder: 10 keywords, ``_unknown_``
  and ``_silence_``, accuracy;
- ``SID``: speaker identification (SUPERB SID) on a VoxCeleb1 folder, accuracy;
- ``IC``: intent classification with slots (SUPERB IC) on a Fluent Speech Commands folder:
  action, object and location per utterance; intent accuracy (all three right) and slot F1;
- ``PR``: prosody classification, the paralinguistic task (synthetic; in the place of SUPERB
  ER): four prosody classes of the same speakers, accuracy.

    python recipes/SUPERB/KS/train.py hparams/weight_ft.yaml
    python recipes/SUPERB/IC/train.py hparams/s3router.yaml --sparsity=0.05
    ... --data_folder=/data/speech_commands_v0.02 --ssl_hub=facebook/wav2vec2-base

With the yaml defaults the data are the synthetic task of ``s3brain.data.superb`` (generated on
first use) and the backbone the project's small wav2vec2. The head is SUPERB's: a learned
weighted sum of every hidden layer, a projection, mean pooling, a linear classifier per target.
Each run writes ``results.json`` (test metrics, cost, storage per task) and, for S3-Router, the
task's ``task_mask.safetensors`` for the mask bank.
"""

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process

from s3brain.backbone.audio import backbone_rate
from s3brain.deployment.export import export_after_run
from s3brain.deployment.model import deploy, deployment_cost
from s3brain.lobes.heads import build_head
from s3brain.training.experiment import (
    seeded_loader_options,
    setup_errors,
    setup_strategies,
    start_experiment,
)
from s3brain.training.finetuning import BackboneFineTuning
from s3brain.training.reporting import split_results, write_results
from s3brain.training.utterance import (
    ClassificationStats,
    dataio_prepare,
    prepare_task,
    summed_cross_entropy,
    target_ids,
)

# The task's folder (not resolved: train.py there is a link to this file), where hparams/ and
# the task's prepare script are.
RECIPE_DIR = Path(__file__).absolute().parent
sys.path.insert(0, str(RECIPE_DIR))


@dataclass(frozen=True)
class UtteranceTask:
    """What a task has of its own: its prepare script (a module of its folder), the synthetic
    task of ``s3brain.data.superb`` that stands in for its dataset, its targets (label columns
    of the manifests) and those of them scored by slot F1."""

    prepare_module: str
    prepare_function: str
    synthetic_task: str
    targets: tuple
    slot_targets: tuple = ()

    def prepare(self, hparams):
        """The task's manifests (``s3brain.training.utterance.prepare_task``).

        Arguments
        ---------
        hparams : dict
            The run's hyperparameters.

        Returns
        -------
        dict
            ``{"train", "valid", "test": manifest path}``.
        """
        prepare_fn = getattr(importlib.import_module(self.prepare_module), self.prepare_function)
        return prepare_task(prepare_fn, hparams["data_folder"], hparams["output_folder"],
                            hparams["skip_prep"], self.synthetic_task, hparams["synthetic_seed"],
                            hparams["synthetic_size"])


#: The tasks, by folder.
TASKS = {
    # twelve classes in one target: the keywords, ``_unknown_``, ``_silence_``
    "KS": UtteranceTask("speech_commands_prepare", "prepare_speech_commands", "speech_commands",
                        ("label",)),
    # one class per speaker
    "SID": UtteranceTask("voxceleb_prepare", "prepare_voxceleb1", "voxceleb1", ("label",)),
    # action, object and location of each command; slot F1 over object and location
    "IC": UtteranceTask("fluent_speech_commands_prepare", "prepare_fluent_speech_commands",
                        "fluent_speech_commands", ("action", "object", "location"),
                        ("object", "location")),
    # four classes of pitch, speed and loudness
    "PR": UtteranceTask("prosody_prepare", "prepare_prosody", "prosody", ("label",)),
}


class UtteranceClassification(BackboneFineTuning):
    """Backbone (every hidden layer, as the strategies run it) -> SUPERB's head -> cross
    entropy summed over the task's targets; accuracy of all targets at once, per target when
    there are several, and slot F1 over the slot targets. ``BackboneFineTuning`` holds the
    strategies' hooks.

    Arguments
    ---------
    task : UtteranceTask
        The task (its targets and slot targets).
    label_encoders : dict
        ``{target: CategoricalEncoder}``, to read the slot values and write the predictions.
    *args, **kwargs
        Those of ``speechbrain.Brain``.
    """

    def __init__(self, task, label_encoders, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.targets, self.slot_targets = task.targets, task.slot_targets
        self.label_encoders = label_encoders

    def compute_forward(self, batch, stage):
        """Logits per target of the head over the backbone's hidden layers."""
        batch = batch.to(self.device)
        hiddens, wav_lens = self.backbone_features(batch, stage)
        return self.modules.head(hiddens, wav_lens)

    def compute_objectives(self, logits, batch, stage):
        """Cross entropy (with the strategies' terms); predictions kept at evaluation."""
        truth = target_ids(batch, self.targets)
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
            self.classification_stats = ClassificationStats(self.targets, self.slot_targets,
                                                            self.label_encoders)
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
    """Prepare, train, test and report one run of the task of the folder this script was
    started from.

    Arguments
    ---------
    argv : list of str
        The command line after the program name: the yaml, then overrides (``--sparsity=0.05``).

    Returns
    -------
    int
        The exit status (a one-line set-up error exits with 2).
    """
    if RECIPE_DIR.name not in TASKS:
        print(f"ERROR: {RECIPE_DIR} is no SUPERB task folder: run the train.py of one of "
              f"{', '.join(f'recipes/SUPERB/{name}' for name in TASKS)}", file=sys.stderr)
        return 2
    task = TASKS[RECIPE_DIR.name]
    with setup_errors():  # no backbone, missing data, bad keys: one line
        hparams, run_opts = start_experiment(argv, RECIPE_DIR)
        manifests = task.prepare(hparams)
        train, valid, test, encoders = dataio_prepare(
            manifests, task.targets, hparams["save_folder"], backbone_rate(hparams["ssl"]),
            hparams["sorting"])
        # the head, sized once the label sets are known: trained by the head optimizer (model),
        # checkpointed, and saved with the task's masks
        head = build_head(hparams["ssl"], encoders, hparams["projection"])
        hparams["model"] = hparams["modules"]["head"] = head
        hparams["checkpointer"].add_recoverable("model", head)
        # none for weight fine-tuning (its yaml lists no strategies)
        strategies = setup_strategies(hparams.get("strategies"), hparams)

    brain = UtteranceClassification(task, encoders, modules=hparams["modules"], hparams=hparams,
                                    run_opts=run_opts, checkpointer=hparams["checkpointer"])
    brain.fit(hparams["epoch_counter"], train, valid,
              train_loader_kwargs=seeded_loader_options(hparams["train_dataloader_opts"],
                                                        hparams["seed"]),
              valid_loader_kwargs=hparams["valid_dataloader_opts"])
    brain.evaluate(test, min_key="error", test_loader_kwargs=hparams["test_dataloader_opts"])

    results = {"strategy": hparams["strategy"], "task": hparams["task"],
               "ssl_hub": str(hparams["ssl_hub"]), "ssl_init": hparams["ssl"].ssl_init,
               "train_seconds": brain.train_seconds}
    extra = [m for k, m in hparams["modules"].items() if k not in ("ssl", "head")]
    # the model that serves the task, built once: its cost, then its inference folder
    deployment = deploy(hparams["ssl"], head, strategies, all_layers=True, extra=extra)
    cost = deployment_cost(deployment, seconds=hparams["cost_seconds"],
                           repeats=hparams["cost_repeats"], threads=hparams["cost_threads"])
    write_results(results, split_results(brain.test_stats, "test"), cost, strategies,
                  hparams["output_folder"], hparams["ssl"], head, primary="accuracy_test",
                  higher_is_better=True, info_keys=("task",))
    if deployment is not None and not run_opts["debug"]:  # the main process, not --debug
        # <output_folder>/inference: the UtteranceClassifier interface serves the run
        export_after_run(hparams["output_folder"], deployment, hparams)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
