#!/usr/bin/env python3
"""LibriSpeech character CTC fine-tuning of a speech SSL backbone, one strategy per yaml.

    python recipes/LibriSpeech/train.py hparams/weight_ft.yaml
    cd recipes/LibriSpeech && python train.py hparams/weight_ft.yaml --data_folder=/data/LibriSpeech

The hparams path may be given relative to the current directory or to this folder. With the
default yaml values the run uses the embedded synthetic corpus (generated on first use) and the
project's own small backbone. Every run writes ``results.json`` in its output folder: WER/CER on
each test split (greedy and, with ``lm_decoding``, KenLM beam search), parameters, FLOPs, CPU
latency and real-time factor, storage per task, training time.

A test split may have any name: a user's own test set laid out as LibriSpeech under the data
folder (``<data_folder>/test-mine/<speaker>/<chapter>/``) is given as
``--test_splits='["test-mine"]'`` and reported as ``wer_test_mine``; the primary metric is the
WER of the first split given. A finished run started again on its output folder skips training
(its checkpoint's epochs are done) and only tests: the new splits' figures join the earlier ones
in ``results.json``.

A yaml lists its strategies (``strategies:``, objects of ``s3brain.strategies``): ``Masks``
(S3-Router: learned masks over the frozen backbone), ``Pruning`` (a ``s3brain.strategies.pruning.schedules`` or
``s3brain.strategies.pruning.structured`` schedule: OMP, IMP, PARP, SAFARI) and ``InitFrom`` (start from the best
checkpoint of an earlier run, e.g. weight fine-tuning, for the pruning strategies).
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
from s3brain.data.manifests import spread_subset  # noqa: E402
from s3brain.deployment.export import export_after_run  # noqa: E402
from s3brain.deployment.model import deploy, deployment_cost, int8_error_rates  # noqa: E402
from s3brain.deployment.modules import token_labels
from s3brain.strategies.early_exit import (  # noqa: E402
    decode_at_exits,
    early_exit_of,
    exit_outputs,
    with_exit_loss,
)
from s3brain.training.ctc import frames_function, lm_decode, usable_utterances
from s3brain.training.experiment import (  # noqa: E402
    seeded_loader_options,
    setup_errors,
    setup_strategies,
    start_experiment,
)
from s3brain.training.finetuning import BackboneFineTuning  # noqa: E402
from s3brain.training.lm import CTCBeamLMDecoder, build_ngram  # noqa: E402
from s3brain.training.reporting import metric_key, split_results, write_results

logger = logging.getLogger(__name__)


class ASR(BackboneFineTuning):
    """Backbone (as the strategies run it) -> head -> character CTC; WER and CER, greedy and
    with the KenLM beam search. ``BackboneFineTuning`` holds the strategies' hooks."""

    label_encoder = None
    lm_decoder = None

    def compute_forward(self, batch, stage):
        """Log-probabilities of the final head, their lengths, and the early exits' (or None)."""
        batch = batch.to(self.device)
        feats, wav_lens = self.backbone_features(batch, stage)
        feats, exits = exit_outputs(early_exit_of(self.strategies), self.modules.ssl, feats,
                                    self.hparams.log_softmax)
        logits = self.modules.ctc_lin(self.modules.head(feats))
        return self.hparams.log_softmax(logits), wav_lens, exits

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss (with the strategies' and the exits' terms); at evaluation the greedy (and,
        at test, LM) transcripts go into the metrics."""
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
            predicted = [token_labels(h, self.label_encoder) for h in hyps]
            target = [words.split(" ") for words in batch.wrd]
            self.wer_metric.append(batch.id, predicted, target)
            self.cer_metric.append(batch.id, predicted, target)
            if stage == sb.Stage.TEST and self.lm_decoder is not None:
                self.lm_metric.append(batch.id, lm_decode(self.lm_decoder, p_ctc, wav_lens),
                                      target)
        return loss

    def init_optimizers(self):
        """Adam for the head and for the backbone's trainable tensors (weights or mask scores);
        the backbone's waits ``ssl_frozen_steps`` updates."""
        self.init_backbone_optimizers(self.hparams.model_opt_class, self.hparams.ssl_opt_class,
                                      self.hparams.ssl_frozen_steps)

    def on_stage_start(self, stage, epoch=None):
        """New metrics; the strategies' ``before_eval`` (re-pruning) and statistics reset."""
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.error_rate_computer()
            self.cer_metric = self.hparams.cer_computer()
            self.lm_metric = self.hparams.error_rate_computer()
            self.strategies_before_eval(stage)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the stage; at VALID anneal and checkpoint, at TEST write the error-rate files."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["CER"] = self.cer_metric.summarize("error_rate")
        stats["WER"] = self.wer_metric.summarize("error_rate")
        stats.update(self.strategy_stats(stage))
        if stage == sb.Stage.VALID:
            lrs = self.anneal(stats)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, **lrs}, train_stats=self.train_stats, valid_stats=stats)
            self.checkpointer.save_and_keep_only(meta=self.checkpoint_meta(stats, "WER"),
                                                 min_keys=["WER"])
        elif stage == sb.Stage.TEST:
            if self.lm_decoder is not None:
                stats["WER_LM"] = self.lm_metric.summarize("error_rate")
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current,
                            "test split": self.test_split}, test_stats=stats)
            self.test_stats = stats
            if if_main_process():
                with open(Path(self.hparams.output_folder) / f"wer_{self.test_split}.txt",
                          "w") as w:
                    self.wer_metric.write_stats(w)
                if self.lm_decoder is not None:
                    with open(Path(self.hparams.output_folder) /
                              f"wer_lm_{self.test_split}.txt", "w") as w:
                        self.lm_metric.write_stats(w)


def label_encoder_for(hparams):
    """The character CTC label encoder: blank, then the alphabet in order (fixed, not learned)."""
    encoder = sb.dataio.encoder.CTCTextEncoder()
    encoder.insert_blank(index=hparams["blank_index"])
    encoder.update_from_iterable(list(hparams["alphabet"]), sequence_input=False)
    encoder.expect_len(hparams["output_neurons"])
    if len(encoder) != hparams["output_neurons"]:
        raise ValueError(f"output_neurons={hparams['output_neurons']} but the alphabet gives "
                         f"{len(encoder)} labels (blank included)")
    return encoder


def dataio_prepare(hparams, manifests, label_encoder):
    """Datasets for train, valid and every test split, with bad utterances reported and skipped."""
    frames_of = frames_function(hparams)

    def load(csv_paths):
        """Manifest rows of ``csv_paths`` that CTC can learn from; the others are logged."""
        data = {}
        for path in csv_paths:
            data.update(sb.dataio.dataio.load_data_csv(path))
        kept, dropped = usable_utterances(data, lambda row: list(row["wrd"]),
                                          hparams["alphabet"], frames_of,
                                          hparams["avoid_if_longer_than"])
        for uid, reason in dropped:
            logger.warning("Skipping %s: %s", uid, reason)
        return kept

    def dataset(rows, sort="ascending"):
        """A ``DynamicItemDataset`` of ``rows``, sorted by duration unless ``sort`` is random."""
        data = sb.dataio.dataset.DynamicItemDataset(rows)
        if sort in ("ascending", "descending"):
            data = data.filtered_sorted(sort_key="duration", reverse=sort == "descending")
        return data

    # train_extra_csvs: more manifests to learn from, e.g. a teacher's pseudo labels of the
    # untranscribed pool (train_salad.py writes them), for semi-supervised fine-tuning
    train = dataset(load([manifests["train"], *(hparams.get("train_extra_csvs") or [])]),
                    hparams["sorting"])
    if hparams["sorting"] == "random":
        hparams["train_dataloader_opts"]["shuffle"] = True
    valid = dataset(spread_subset(load([manifests[s] for s in hparams["dev_splits"]]),
                                  hparams["dev_max_utterances"]))
    tests = {s: dataset(load([manifests[s]])) for s in hparams["test_splits"]}
    datasets = [train, valid, *tests.values()]

    rate = backbone_rate(hparams["ssl"])

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        """The signal of one file, mono at the backbone's rate."""
        return read_audio(wav, rate)  # one channel at the backbone's rate, whatever the file's

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(wrd):
        """The transcript as character label ids."""
        return torch.LongTensor(label_encoder.encode_sequence(list(wrd)))

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens"])
    return train, valid, tests


def prepare_data(hparams):
    """Generate the synthetic corpus if it is the data folder, then write the manifests."""
    from librispeech_prepare import prepare_librispeech

    data_folder = Path(hparams["data_folder"])
    default = synthetic.corpus_dir(hparams["synthetic_seed"], hparams["synthetic_size"])
    if data_folder.resolve() == default.resolve():
        run_on_main(synthetic.generate, kwargs={
            "seed": hparams["synthetic_seed"], "size": hparams["synthetic_size"]})
    kwargs = {"data_folder": data_folder, "save_folder": hparams["output_folder"],
              "tr_splits": hparams["train_splits"], "dev_splits": hparams["dev_splits"],
              "te_splits": hparams["test_splits"], "skip_prep": hparams["skip_prep"]}
    run_on_main(prepare_librispeech, kwargs=kwargs)
    return prepare_librispeech(**{**kwargs, "skip_prep": True})


def lm_decoder_for(hparams, label_encoder, workers=1):
    """The KenLM beam-search decoder, or None without ``lm_decoding``; its search runs in
    ``workers`` processes.

    Without ``kenlm_model`` an n-gram is estimated from the transcripts of ``lm_text_splits``
    (for the embedded default: every training split, whose sentences are disjoint from the test
    sentences) and the sentences of ``lm_text_files`` (plain text, one normalised sentence a
    line, as LibriSpeech's ``librispeech-lm-norm.txt``; the WordNet corpus writes its own).
    """
    if not hparams["lm_decoding"]:
        return None
    kenlm_model = hparams["kenlm_model"]
    if not kenlm_model:
        from librispeech_prepare import find_librispeech_root, transcripts

        kenlm_model = Path(hparams["save_folder"]) / f"lm_{hparams['lm_order']}gram.arpa"
        if not kenlm_model.exists():
            root = find_librispeech_root(hparams["data_folder"], hparams["train_splits"])
            splits = [s for s in hparams["lm_text_splits"] if (root / s).is_dir()]
            if len(splits) < len(hparams["lm_text_splits"]):
                logger.warning("LM text: splits %s not in %s, using %s",
                               sorted(set(hparams["lm_text_splits"]) - set(splits)), root, splits)
            if not splits:
                raise FileNotFoundError(
                    f"none of lm_text_splits={hparams['lm_text_splits']} is in {root}: give "
                    f"--kenlm_model=<an ARPA or KenLM binary>, other --lm_text_splits, or "
                    f"--lm_decoding=False")
            text = transcripts(root, splits)
            logger.info("Estimating a %d-gram LM from %d sentences of %s", hparams["lm_order"],
                        len(text), splits)
            for path in hparams["lm_text_files"]:
                with open(path, encoding="utf-8") as f:
                    lines = [line.strip() for line in f if line.strip()]
                logger.info("... and %d sentences of %s", len(lines), path)
                text += lines
            run_on_main(build_ngram, args=[text, kenlm_model, hparams["lm_order"]])
    labels = ["" if i == hparams["blank_index"] else label_encoder.ind2lab[i]
              for i in range(len(label_encoder))]
    return CTCBeamLMDecoder(labels, str(kenlm_model), beam_width=hparams["lm_beam_width"],
                            lm_weight=hparams["lm_weight"],
                            word_insertion=hparams["lm_word_insertion"],
                            workers=workers)


def main(argv):
    """Prepare, train, test and report one run; the exit status (2: a one-line error)."""
    with setup_errors():  # no backbone, missing data, wrong init_from, bad keys: one line
        hparams, run_opts = start_experiment(argv, RECIPE_DIR)
        if not hparams["test_splits"]:
            raise ValueError("test_splits is empty: give the split(s) to test on, e.g. "
                             "--test_splits='[\"test-clean\"]'")
        label_encoder = label_encoder_for(hparams)
        manifests = prepare_data(hparams)
        strategies = setup_strategies(hparams["strategies"], hparams)
        # --debug checks the code path in this process: no worker processes to start
        lm_decoder = lm_decoder_for(hparams, label_encoder,
                                    1 if run_opts["debug"] else hparams["lm_workers"])
    train, valid, tests = dataio_prepare(hparams, manifests, label_encoder)

    asr = ASR(modules=hparams["modules"], hparams=hparams, run_opts=run_opts,
              checkpointer=hparams["checkpointer"])
    asr.label_encoder, asr.lm_decoder = label_encoder, lm_decoder
    asr.fit(hparams["epoch_counter"], train, valid,
            train_loader_kwargs=seeded_loader_options(hparams["train_dataloader_opts"],
                                                      hparams["seed"]),
            valid_loader_kwargs=hparams["valid_dataloader_opts"])

    results = {"strategy": hparams["strategy"], "ssl_hub": str(hparams["ssl_hub"]),
               "ssl_init": hparams["ssl"].ssl_init,
               "train_split": "+".join(hparams["train_splits"])}
    metrics = {}
    try:
        for split, data in tests.items():
            asr.test_split = split
            asr.evaluate(data, min_key="WER", test_loader_kwargs=hparams["test_dataloader_opts"])
            metrics.update(split_results(asr.test_stats, split))
    finally:  # the LM search's worker processes end with the test stage (a process that is
        if lm_decoder is not None:  # itself a multiprocessing child would wait on them at exit)
            lm_decoder.close()
    results["train_seconds"] = asr.train_seconds
    # the cost of the model that serves the task, on 10 s of audio as in the papers
    head = torch.nn.Sequential(hparams["modules"]["head"], hparams["modules"]["ctc_lin"])
    extra = [m for k, m in hparams["modules"].items() if k not in ("ssl", "head", "ctc_lin")]
    deployment = deploy(hparams["ssl"], head, strategies, extra=extra)  # fp32 and int8
    if deployment is not None and hparams["int8_cnn_calibration"] > 0:
        step = max(1, len(train) // hparams["int8_cnn_calibration"])
        deployment.calibration = [train[i]["sig"][None].float() for i in range(0, len(train), step)
                                  ][:hparams["int8_cnn_calibration"]]
        deployment.static_options = {"float_layers": hparams["int8_cnn_float_layers"]}
    cost = deployment_cost(deployment, seconds=10, repeats=hparams["cost_repeats"],
                           threads=hparams["cost_threads"])
    for split, data in tests.items():  # the int8 model's error rates, after all fp32 metrics
        metrics.update(int8_error_rates(deployment, data, split, label_encoder,
                                        hparams["blank_index"], enabled=hparams["int8_eval"]))
    # any split name (a user's own test set): ranked by the first split given
    write_results(results, metrics, cost, strategies, hparams["output_folder"], hparams["ssl"],
                  hparams["model"], primary=metric_key("wer", hparams["test_splits"][0]))
    if deployment is not None and not run_opts["debug"]:  # the main process, not --debug
        # <output_folder>/inference, written from the deployment just measured:
        # EncoderASR.from_hparams(source=...) serves the run
        export_after_run(hparams["output_folder"], deployment, hparams)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
