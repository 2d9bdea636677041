#!/usr/bin/env python3
"""CommonVoice phoneme recognition (IPA, CTC) with a speech SSL backbone, one language per run.

    python recipes/CommonVoice/train.py hparams/s3router.yaml --language=de
    python recipes/CommonVoice/train.py hparams/weight_ft.yaml --language=nl \\
        --data_folder=/data/cv-corpus-17.0 --ssl_hub=facebook/wav2vec2-xls-r-300m

With the yaml defaults the run uses the Common Voice part of the embedded synthetic corpus
(generated on first use; en, de, nl, es, it, fr) and the project's small backbone. The phoneme
set is learned from the training manifest and kept in ``label_encoder.txt``. Each run writes
``results.json`` (PER on the test split, cost, storage per language) and, for S3-Router, the
language's ``task_mask.safetensors`` for the multilingual mask bank.
"""

import logging
import sys
from pathlib import Path

RECIPE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(RECIPE_DIR))

import speechbrain as sb  # noqa: E402
import torch  # noqa: E402
from speechbrain.utils.distributed import if_main_process, run_on_main  # noqa: E402

from s3brain.backbone.audio import backbone_rate, read_audio  # noqa: E402
from s3brain.data import synthetic  # noqa: E402
from s3brain.deployment.export import export_after_run  # noqa: E402
from s3brain.deployment.model import deploy, deployment_cost, int8_error_rates  # noqa: E402
from s3brain.deployment.modules import token_labels
from s3brain.strategies.early_exit import (  # noqa: E402
    decode_at_exits,
    early_exit_of,
    exit_outputs,
    with_exit_loss,
)
from s3brain.training.ctc import frames_function, usable_utterances
from s3brain.training.experiment import (  # noqa: E402
    seeded_loader_options,
    setup_errors,
    setup_strategies,
    start_experiment,
)
from s3brain.training.finetuning import BackboneFineTuning  # noqa: E402
from s3brain.training.reporting import metric_key, split_results, write_results

logger = logging.getLogger(__name__)


class PhonemeRecognition(BackboneFineTuning):
    """Backbone (as the strategies run it) -> head -> phoneme CTC; phoneme error rate (PER).
    ``BackboneFineTuning`` holds the strategies' hooks."""

    label_encoder = None

    def compute_forward(self, batch, stage):
        """Log-probabilities of the final head, their lengths, and the early exits' (or None)."""
        batch = batch.to(self.device)
        feats, wav_lens = self.backbone_features(batch, stage)
        feats, exits = exit_outputs(early_exit_of(self.strategies), self.modules.ssl, feats,
                                    self.hparams.log_softmax)
        logits = self.modules.ctc_lin(self.modules.head(feats))
        return self.hparams.log_softmax(logits), wav_lens, exits

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss (with the strategies' and the exits' terms); at evaluation the greedy
        phoneme sequences go into the PER."""
        p_ctc, wav_lens, exits = predictions
        tokens, tokens_lens = batch.tokens
        loss = self.hparams.ctc_cost(p_ctc, tokens, wav_lens, tokens_lens)
        loss = self.strategies_loss(loss, predictions, batch, stage)
        if exits:
            loss = with_exit_loss(early_exit_of(self.strategies), loss, exits, lambda e:
                                  self.hparams.ctc_cost(e, tokens, wav_lens, tokens_lens))
        if stage != sb.Stage.TRAIN:
            if exits is not None:  # decoded as deployed: each utterance stops at its exit
                hyps = decode_at_exits(early_exit_of(self.strategies), self.modules.ssl,
                                       lambda h: self.modules.ctc_lin(self.modules.head(h)),
                                       *batch.sig, self.hparams.blank_index)
            else:
                hyps = sb.decoders.ctc_greedy_decode(p_ctc, wav_lens,
                                                     blank_id=self.hparams.blank_index)
            predicted = [token_labels(h, self.label_encoder, "phonemes") for h in hyps]
            self.per_metric.append(batch.id, predicted, [p.split() for p in batch.phn])
        return loss

    def init_optimizers(self):
        """Adam for the head and for the backbone's trainable tensors (weights or mask scores);
        the backbone's waits ``ssl_frozen_steps`` updates."""
        self.init_backbone_optimizers(self.hparams.model_opt_class, self.hparams.ssl_opt_class,
                                      self.hparams.ssl_frozen_steps)

    def on_stage_start(self, stage, epoch=None):
        """A new PER; the strategies' ``before_eval`` (re-pruning) and statistics reset."""
        if stage != sb.Stage.TRAIN:
            self.per_metric = self.hparams.error_rate_computer()
            self.strategies_before_eval(stage)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the stage; at VALID anneal and checkpoint, at TEST write the PER file."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["PER"] = self.per_metric.summarize("error_rate")
        stats.update(self.strategy_stats(stage))
        if stage == sb.Stage.VALID:
            lrs = self.anneal(stats)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, **lrs}, train_stats=self.train_stats, valid_stats=stats)
            self.checkpointer.save_and_keep_only(meta=self.checkpoint_meta(stats, "PER"),
                                                 min_keys=["PER"])
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats)
            self.test_stats = stats
            if if_main_process():
                with open(Path(self.hparams.output_folder) /
                          f"per_{self.hparams.test_split}.txt", "w") as w:
                    self.per_metric.write_stats(w)


def prepare_data(hparams):
    """Generate the synthetic corpus if it is the data folder, then write the manifests."""
    from common_voice_prepare import prepare_common_voice

    data_folder = Path(hparams["data_folder"])
    default = synthetic.corpus_dir(hparams["synthetic_seed"], hparams["synthetic_size"])
    if data_folder.resolve() == (default / "CommonVoice").resolve():
        if "commonvoice" not in synthetic.SIZES.get(hparams["synthetic_size"], {"commonvoice": 1}):
            raise ValueError(f"the synthetic corpus size {hparams['synthetic_size']!r} has no "
                             "Common Voice part (LibriSpeech only): use --synthetic_size=default "
                             "or tiny, or --data_folder=<a Common Voice folder>")
        run_on_main(synthetic.generate, kwargs={
            "seed": hparams["synthetic_seed"], "size": hparams["synthetic_size"]})
    kwargs = {"data_folder": data_folder, "save_folder": hparams["output_folder"],
              "locale": hparams["language"],
              "splits": [hparams["train_split"], hparams["dev_split"], hparams["test_split"]],
              "skip_prep": hparams["skip_prep"]}
    run_on_main(prepare_common_voice, kwargs=kwargs)
    return prepare_common_voice(**{**kwargs, "skip_prep": True})


def label_encoder_for(hparams, train_csv):
    """The phoneme CTC label encoder: blank, then the training set's phonemes (saved, so a
    resumed or evaluated run uses the same mapping)."""
    encoder = sb.dataio.encoder.CTCTextEncoder()
    path = Path(hparams["save_folder"]) / "label_encoder.txt"
    if not encoder.load_if_possible(path):
        rows = sb.dataio.dataio.load_data_csv(train_csv)
        phonemes = sorted({p for row in rows.values() for p in row["phn"].split()})
        encoder.insert_blank(index=hparams["blank_index"])
        encoder.update_from_iterable(phonemes, sequence_input=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        run_on_main(encoder.save, args=[path])
    encoder.ignore_len()  # the head may be wider than the phoneme set
    if len(encoder) > hparams["output_neurons"]:
        raise ValueError(f"{len(encoder)} labels (blank and {len(encoder) - 1} phonemes) do not "
                         f"fit output_neurons={hparams['output_neurons']}: raise it")
    return encoder


def dataio_prepare(hparams, manifests, label_encoder):
    """Datasets for train, dev and test, with unusable clips reported and skipped."""
    allowed = [label for label in label_encoder.lab2ind if label != label_encoder.blank_label]

    def load(path):
        """Manifest rows of ``path`` that CTC can learn from; the others are logged."""
        data = sb.dataio.dataio.load_data_csv(path)
        kept, dropped = usable_utterances(
            data, lambda row: row["phn"].split(), allowed,
            frames_function(hparams),
            hparams["avoid_if_longer_than"])
        for uid, reason in dropped:
            logger.warning("Skipping %s: %s", uid, reason)
        data = sb.dataio.dataset.DynamicItemDataset(kept)
        return data.filtered_sorted(sort_key="duration")

    train, dev, test = (load(manifests[hparams[k]]) for k in ("train_split", "dev_split",
                                                               "test_split"))
    datasets = [train, dev, test]

    rate = backbone_rate(hparams["ssl"])

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        """The signal of one clip, mono at the backbone's rate (Common Voice: 48 kHz mp3)."""
        return read_audio(wav, rate)  # CommonVoice ships 48 kHz mp3: resampled here

    @sb.utils.data_pipeline.takes("phn")
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(phn):
        """The phoneme transcript as label ids."""
        return torch.LongTensor(label_encoder.encode_sequence(phn.split()))

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "phn", "tokens"])
    return train, dev, test


def main(argv):
    """Prepare, train, test and report one language's run; the exit status (2: a one-line
    error)."""
    with setup_errors():  # no backbone, missing data, wrong init_from, bad keys: one line
        hparams, run_opts = start_experiment(argv, RECIPE_DIR)
        manifests = prepare_data(hparams)
        label_encoder = label_encoder_for(hparams, manifests[hparams["train_split"]])
        strategies = setup_strategies(hparams["strategies"], hparams)
    train, dev, test = dataio_prepare(hparams, manifests, label_encoder)

    brain = PhonemeRecognition(modules=hparams["modules"], hparams=hparams, run_opts=run_opts,
                               checkpointer=hparams["checkpointer"])
    brain.label_encoder = label_encoder
    brain.fit(hparams["epoch_counter"], train, dev,
              train_loader_kwargs=seeded_loader_options(hparams["train_dataloader_opts"],
                                                        hparams["seed"]),
              valid_loader_kwargs=hparams["valid_dataloader_opts"])
    brain.evaluate(test, min_key="PER", test_loader_kwargs=hparams["test_dataloader_opts"])

    results = {"strategy": hparams["strategy"], "language": hparams["language"],
               "ssl_hub": str(hparams["ssl_hub"]), "ssl_init": hparams["ssl"].ssl_init,
               "train_split": f"{hparams['language']}/{hparams['train_split']}",
               "phonemes": len(label_encoder) - 1, "train_seconds": brain.train_seconds}
    split = hparams["test_split"]  # any name: a user's own <split>.tsv reports per_<split>
    metrics = split_results(brain.test_stats, split)
    # the cost of the model that serves the language, on 10 s of audio as in the papers
    head = torch.nn.Sequential(hparams["modules"]["head"], hparams["modules"]["ctc_lin"])
    extra = [m for k, m in hparams["modules"].items() if k not in ("ssl", "head", "ctc_lin")]
    deployment = deploy(hparams["ssl"], head, strategies, extra=extra)  # fp32 and int8
    cost = deployment_cost(deployment, seconds=10, repeats=hparams["cost_repeats"],
                           threads=hparams["cost_threads"])
    metrics.update(int8_error_rates(deployment, test, split, label_encoder,
                                    hparams["blank_index"], units="phonemes",
                                    enabled=hparams["int8_eval"]))
    write_results(results, metrics, cost, strategies, hparams["output_folder"], hparams["ssl"],
                  hparams["model"], primary=metric_key("per", split))
    if deployment is not None and not run_opts["debug"]:  # the main process, not --debug
        # <output_folder>/inference, written from the deployment just measured:
        # EncoderASR.from_hparams(source=...) serves the run
        export_after_run(hparams["output_folder"], deployment, hparams)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
