#!/usr/bin/env python3
"""wav2vec 2.0 self-supervised pretraining on unlabelled audio (LibriSpeech/CommonVoice layouts).

    python recipes/LibriSpeech/pretrain/train.py hparams/wav2vec2_tiny.yaml

Logs the contrastive and diversity losses per epoch, checkpoints within epochs (resumable), at
each step of ``export_steps`` writes the encoder to ``<output_folder>/hf_model_step<N>``, and
at the end writes the encoder as a Hugging Face folder (``export_folder``) that the fine-tuning
recipes take as ``--ssl_hub``.
"""

import csv
import logging
import random
import sys
from pathlib import Path

PRETRAIN_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(PRETRAIN_DIR.parent))

import soundfile as sf  # noqa: E402
import speechbrain as sb  # noqa: E402
from speechbrain.utils.distributed import if_main_process, run_on_main  # noqa: E402

from s3brain.backbone.audio import backbone_rate, read_audio  # noqa: E402
from s3brain.data import synthetic  # noqa: E402
from s3brain.training.experiment import seeded_loader_options, setup_errors, start_experiment  # noqa: E402
from s3brain.training.pretraining import export_backbone, pretraining_step  # noqa: E402
from s3brain.utils.checkpoint import share_checkpoint_dir  # noqa: E402

logger = logging.getLogger(__name__)


class Wav2Vec2Pretraining(sb.Brain):
    """Contrastive + diversity loss on masked frames; Gumbel temperature annealed per step."""

    def compute_forward(self, batch, stage):
        """Pretraining forward pass with freshly drawn time masks and negatives.

        Arguments
        ---------
        batch : PaddedBatch
            ``sig``: the waveforms and their relative lengths.
        stage : sb.Stage
            TRAIN or VALID (the same computation for both).

        Returns
        -------
        output : transformers Wav2Vec2ForPreTrainingOutput
            Its ``loss`` (summed over the masked frames), ``contrastive_loss``,
            ``diversity_loss`` and ``codevector_perplexity``.
        masked : int
            The number of masked frames in the batch.
        """
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        model = self.modules.model
        model = getattr(model, "module", model)
        return pretraining_step(model, wavs, wav_lens, self.hparams.mask_prob,
                                self.hparams.mask_length, self.hparams.num_negatives)

    def compute_objectives(self, predictions, batch, stage):
        """The loss per masked frame; adds the batch's loss terms to the stage's sums.

        Arguments
        ---------
        predictions : tuple
            ``(output, masked)`` from ``compute_forward``.
        batch : PaddedBatch
            The batch (not used: the targets are the model's own quantized features).
        stage : sb.Stage
            TRAIN or VALID.

        Returns
        -------
        loss : torch.Tensor
            Contrastive plus weighted diversity loss, divided by the masked frames.
        """
        out, masked = predictions
        masked = max(masked, 1)
        self.sums["contrastive"] += float(out.contrastive_loss) / masked
        self.sums["diversity"] += float(out.diversity_loss) / masked
        self.sums["perplexity"] += float(out.codevector_perplexity)
        self.sums["batches"] += 1
        return out.loss / masked

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """After an optimizer step: step the learning-rate schedule, lower the Gumbel
        softmax temperature (``gumbel_max * gumbel_decay ** step``, not below ``gumbel_min``)
        and, at a step of ``export_steps``, export the encoder (``export_checkpoint``).

        Arguments
        ---------
        batch : PaddedBatch
            The batch just trained on.
        outputs : tuple
            What ``compute_forward`` returned.
        loss : torch.Tensor
            The batch's loss.
        should_step : bool
            Whether the optimizer stepped (False while gradients accumulate).
        """
        if should_step:
            self.hparams.lr_scheduler(self.optimizer)
            model = self.modules.model
            model = getattr(model, "module", model)
            temperature = max(self.hparams.gumbel_max * self.hparams.gumbel_decay ** self.optimizer_step,
                              self.hparams.gumbel_min)
            model.set_gumbel_temperature(temperature)
            if self.optimizer_step in self.hparams.export_steps:
                run_on_main(self.export_checkpoint)

    def export_checkpoint(self):
        """Write the encoder as it is now to ``<output_folder>/hf_model_step<N>`` (a step of
        ``export_steps``), unless a resumed run already wrote it (its ``training.json``, written
        last, marks a complete export).

        Returns
        -------
        path : Path
            The folder.
        """
        path = Path(self.hparams.output_folder) / f"hf_model_step{self.optimizer_step}"
        if (path / "training.json").exists():
            return path
        card = {"steps": self.optimizer_step,
                "train_seconds": round(self.hparams.run_state.elapsed()),
                "seed": self.hparams.seed,
                "last_epoch_train": getattr(self, "train_stats", None)}
        model = self.modules.model
        export_backbone(getattr(model, "module", model), self.hparams.model_config, path, card)
        logger.info("Backbone at step %d written to %s", self.optimizer_step, path)
        return path

    def on_fit_start(self):
        """Recover the latest checkpoint (SpeechBrain's ``on_fit_start``), then start the
        training-time clock of ``run_state``."""
        super().on_fit_start()
        self.hparams.run_state.start_timer()

    def on_stage_start(self, stage, epoch=None):
        """Reset the sums of the loss terms that ``on_stage_end`` averages.

        Arguments
        ---------
        stage : sb.Stage
            The stage starting.
        epoch : int, optional
            The epoch number.
        """
        self.sums = {"contrastive": 0.0, "diversity": 0.0, "perplexity": 0.0, "batches": 0}

    def _stage_stats(self, loss):
        n = max(self.sums["batches"], 1)
        return {"loss": loss, "contrastive_per_frame": self.sums["contrastive"] / n,
                "diversity": self.sums["diversity"] / n,
                "codebook_perplexity": self.sums["perplexity"] / n}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Keep the stage's averages; after validation, log the epoch and save a checkpoint
        (the two with the lowest validation loss are kept).

        Arguments
        ---------
        stage : sb.Stage
            The stage ending.
        stage_loss : float
            The average loss of the stage.
        epoch : int, optional
            The epoch number.
        """
        stats = self._stage_stats(stage_loss)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
        elif stage == sb.Stage.VALID:
            self.valid_stats = stats
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                            "steps": self.optimizer_step},
                train_stats=self.train_stats, valid_stats=stats)
            self.checkpointer.save_and_keep_only(meta={"loss": stats["loss"]}, num_to_keep=2)


def commonvoice_rows(folder, langs, split="train"):
    """Unlabelled rows ``(ID, duration, wav)`` from CommonVoice-layout ``<lang>/<split>.tsv``."""
    rows = []
    for lang in langs:
        tsv = Path(folder) / lang / f"{split}.tsv"
        if not tsv.exists():
            raise FileNotFoundError(f"{tsv} not found: expected the CommonVoice layout "
                                    "<folder>/<lang>/{train,dev,test}.tsv + clips/")
        with open(tsv, encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                clip = Path(folder) / lang / "clips" / row["path"]
                try:
                    info = sf.info(str(clip))
                except (RuntimeError, OSError) as err:
                    logger.warning("Skipping %s: unreadable audio (%s)", clip.name, err)
                    continue
                if info.frames > 0:
                    rows.append({"ID": clip.stem, "duration": info.frames / info.samplerate,
                                 "wav": str(clip)})
    return rows


def prepare_manifests(hparams):
    """Write train.csv / dev.csv (ID, duration, wav) from the LibriSpeech and CommonVoice parts."""
    from librispeech_prepare import prepare_librispeech, write_csv

    data_folder = Path(hparams["data_folder"])
    if data_folder.resolve() == synthetic.corpus_dir(hparams["synthetic_seed"],
                                                     hparams["synthetic_size"]).resolve():
        synthetic.generate(seed=hparams["synthetic_seed"], size=hparams["synthetic_size"])
    out = Path(hparams["output_folder"])
    manifests = prepare_librispeech(data_folder, out / "librispeech", tr_splits=hparams["train_splits"],
                                    dev_splits=hparams["dev_splits"], skip_prep=hparams["skip_prep"])
    rows = [{"ID": k, **v} for k, v in sb.dataio.dataio.load_data_csv(manifests["train"]).items()]
    if hparams["commonvoice_langs"]:
        cv_folder = data_folder / "CommonVoice"
        rows += [{**r, "spk_id": "", "wrd": ""}
                 for r in commonvoice_rows(cv_folder, hparams["commonvoice_langs"])]
    write_csv(rows, out / "pretrain_train.csv")
    dev = sb.dataio.dataio.load_data_csv(manifests[hparams["dev_splits"][0]])
    write_csv([{"ID": k, **v} for k, v in dev.items()], out / "pretrain_dev.csv")


def dataio_prepare(hparams):
    """The training and validation datasets of the manifests ``prepare_manifests`` wrote.

    Utterances outside ``avoid_if_shorter_than`` .. ``avoid_if_longer_than`` seconds are left
    out. Training audio is cut to a random window of ``crop_seconds``; validation audio is whole.
    Audio is read at the rate of the model being pretrained.

    Arguments
    ---------
    hparams : dict
        The loaded yaml.

    Returns
    -------
    train : DynamicItemDataset
        Items ``id`` and ``sig``, sorted by duration unless ``sorting`` is ``random``.
    valid : DynamicItemDataset
        Items ``id`` and ``sig``, sorted by duration.
    """
    out = Path(hparams["output_folder"])

    def dataset(path, sort):
        """The manifest at ``path`` within the duration limits, sorted by duration if ``sort``."""
        data = sb.dataio.dataset.DynamicItemDataset.from_csv(path)
        keep = {"duration": lambda d: hparams["avoid_if_shorter_than"] <= float(d)
                <= hparams["avoid_if_longer_than"]}
        return data.filtered_sorted(key_test=keep, sort_key="duration" if sort else None)

    train = dataset(out / "pretrain_train.csv", hparams["sorting"] != "random")
    if hparams["sorting"] == "random":
        hparams["train_dataloader_opts"]["shuffle"] = True
    valid = dataset(out / "pretrain_dev.csv", True)

    # the rate of the model being pretrained (its preprocessor config), whatever the files'
    rate = backbone_rate(hparams["model_config"])

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        """The whole utterance at the model's rate."""
        return read_audio(wav, rate)

    crop = int(hparams["crop_seconds"] * rate)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def cropped_audio_pipeline(wav):
        """A random window of at most ``crop_seconds``, as wav2vec 2.0 pretraining takes."""
        sig = read_audio(wav, rate)
        if 0 < crop < len(sig):
            start = random.randint(0, len(sig) - crop)
            sig = sig[start:start + crop]
        return sig

    sb.dataio.dataset.add_dynamic_item([train], cropped_audio_pipeline)
    sb.dataio.dataset.add_dynamic_item([valid], audio_pipeline)
    sb.dataio.dataset.set_output_keys([train, valid], ["id", "sig"])
    return train, valid


def main(argv):
    """Prepare the manifests, pretrain, and export the encoder as a Hugging Face folder.

    Arguments
    ---------
    argv : list of str
        The yaml (a path, or a name in this folder), then overrides and SpeechBrain's run
        options.

    Returns
    -------
    exit_code : int
        0.
    """
    with setup_errors():  # a missing corpus or bad keys: one line
        hparams, run_opts = start_experiment(argv, PRETRAIN_DIR)
        run_on_main(prepare_manifests, kwargs={"hparams": hparams})
    train, valid = dataio_prepare(hparams)
    brain = Wav2Vec2Pretraining(modules=hparams["modules"], opt_class=hparams["opt_class"],
                                hparams=hparams, run_opts=run_opts,
                                checkpointer=hparams["checkpointer"])
    share_checkpoint_dir(brain.checkpointer)
    if hparams["max_steps"] > 0:
        brain.optimizer_step_limit = hparams["max_steps"]
    brain.fit(hparams["epoch_counter"], train, valid,
              train_loader_kwargs=seeded_loader_options(hparams["train_dataloader_opts"],
                                                        hparams["seed"]),
              valid_loader_kwargs=hparams["valid_dataloader_opts"])
    hparams["run_state"].stop_timer()
    if if_main_process():
        card = {"steps": brain.optimizer_step, "train_seconds": round(hparams["run_state"].elapsed()),
                "seed": hparams["seed"], "synthetic_seed": hparams["synthetic_seed"],
                "train_utterances": len(train), "last_epoch_train": getattr(brain, "train_stats", None),
                "last_epoch_valid": getattr(brain, "valid_stats", None)}
        model = brain.modules.model
        path = export_backbone(getattr(model, "module", model), hparams["model_config"],
                               hparams["export_folder"], card)
        logger.info("Pretrained backbone written to %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
