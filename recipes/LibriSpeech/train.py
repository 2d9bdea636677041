#!/usr/bin/env python3
"""LibriSpeech character CTC fine-tuning of a speech SSL backbone, one strategy per yaml.

    python recipes/LibriSpeech/train.py hparams/weight_ft.yaml
    cd recipes/LibriSpeech && python train.py hparams/weight_ft.yaml --data_folder=/data/LibriSpeech

The hparams path may be given relative to the current directory or to this folder. With the
default yaml values the run uses the embedded synthetic corpus (generated on first use) and the
project's own small backbone. Every run writes ``results.json`` in its output folder: WER/CER on
each test split (greedy and, with ``lm_decoding``, KenLM beam search), parameters, FLOPs, CPU
latency and real-time factor, storage per task, training time.

Strategies are yaml keys: ``masks`` (S3-Router: learned masks over the frozen backbone),
``pruning`` (a ``s3brain.pruning`` schedule: OMP, IMP, PARP) and ``init_from`` (start from the
best checkpoint of an earlier run, e.g. weight fine-tuning, for the pruning strategies).
"""

import copy
import logging
import sys
from pathlib import Path

RECIPE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(RECIPE_DIR))

import speechbrain as sb  # noqa: E402
import torch  # noqa: E402
from hyperpyyaml import load_hyperpyyaml  # noqa: E402
from speechbrain.utils.distributed import if_main_process, run_on_main  # noqa: E402

from s3brain.backbone import BackboneUnavailableError, feature_frames  # noqa: E402
from s3brain.checkpoint import share_checkpoint_dir  # noqa: E402
from s3brain.data import synthetic  # noqa: E402
from s3brain.efficiency import count_parameters, measure_cost  # noqa: E402
from s3brain.lm import CTCBeamLMDecoder, build_ngram  # noqa: E402
from s3brain.mask_bank import save_mask  # noqa: E402
from s3brain.masks import add_masks, fold, weight_sparsity  # noqa: E402
from s3brain.results import update_results  # noqa: E402

logger = logging.getLogger(__name__)


class ASR(sb.Brain):
    """CTC fine-tuning: SSL backbone -> small head -> character CTC."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        if stage == sb.Stage.TRAIN and self.ssl_frozen():
            with torch.no_grad():
                feats = self.modules.ssl(wavs, wav_lens)
        else:
            feats = self.modules.ssl(wavs, wav_lens)
        logits = self.modules.ctc_lin(self.modules.head(feats))
        return self.hparams.log_softmax(logits), wav_lens

    def compute_objectives(self, predictions, batch, stage):
        p_ctc, wav_lens = predictions
        tokens, tokens_lens = batch.tokens
        loss = self.hparams.ctc_cost(p_ctc, tokens, wav_lens, tokens_lens)
        if stage != sb.Stage.TRAIN:
            hyps = sb.decoders.ctc_greedy_decode(p_ctc, wav_lens, blank_id=self.hparams.blank_index)
            predicted = [self.decode_words(h) for h in hyps]
            target = [w.split(" ") for w in batch.wrd]
            self.wer_metric.append(batch.id, predicted, target)
            self.cer_metric.append(batch.id, predicted, target)
        if stage == sb.Stage.TEST and self.lm_decoder is not None:
            frames = (wav_lens * p_ctc.shape[1]).round().int().tolist()
            log_probs = p_ctc.detach().float().cpu().numpy()
            predicted = [self.lm_decoder.decode(lp[:n]) for lp, n in zip(log_probs, frames)]
            self.wer_lm_metric.append(batch.id, predicted, target)
        return loss

    lm_decoder = None

    def decode_words(self, token_ids):
        """Token ids -> list of words."""
        text = "".join(self.label_encoder.decode_ndim(token_ids))
        return text.split()

    def ssl_frozen(self):
        """Whether the backbone is still held fixed (the first ``ssl_frozen_steps`` updates)."""
        return self.optimizer_step < self.hparams.ssl_frozen_steps

    def freeze_optimizers(self, optimizers):
        """Leave the backbone's optimizer out while the backbone is held fixed."""
        if self.ssl_frozen():
            return {k: v for k, v in optimizers.items() if k != "ssl_optimizer"}
        return optimizers

    def init_optimizers(self):
        """Separate optimizers for the backbone and the head, both checkpointed."""
        self.model_optimizer = self.hparams.model_opt_class(self.hparams.model.parameters())
        self.optimizers_dict = {"model_optimizer": self.model_optimizer}
        ssl_params = [p for p in self.modules.ssl.parameters() if p.requires_grad]
        if ssl_params:
            self.ssl_optimizer = self.hparams.ssl_opt_class(ssl_params)
            self.optimizers_dict["ssl_optimizer"] = self.ssl_optimizer
        if self.checkpointer is not None:
            for name, opt in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(name, opt)

    def on_fit_start(self):
        super().on_fit_start()
        self.hparams.run_state.start_timer()

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        pruning = getattr(self.hparams, "pruning", None)
        if should_step and pruning is not None:
            pruning.on_step(self.modules.ssl, self.optimizer_step)

    def on_stage_start(self, stage, epoch=None):
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.error_rate_computer()
            self.cer_metric = self.hparams.cer_computer()
            self.wer_lm_metric = self.hparams.error_rate_computer()
            pruning = getattr(self.hparams, "pruning", None)
            if pruning is not None:
                pruning.before_eval(self.modules.ssl)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["CER"] = self.cer_metric.summarize("error_rate")
        stats["WER"] = self.wer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            old_lr, new_lr = self.hparams.lr_annealing_model(stats["loss"])
            sb.nnet.schedulers.update_learning_rate(self.model_optimizer, new_lr)
            lrs = {"lr_model": old_lr}
            if hasattr(self, "ssl_optimizer"):
                old_lr_ssl, new_lr_ssl = self.hparams.lr_annealing_ssl(stats["loss"])
                sb.nnet.schedulers.update_learning_rate(self.ssl_optimizer, new_lr_ssl)
                lrs["lr_ssl"] = old_lr_ssl
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, **lrs}, train_stats=self.train_stats, valid_stats=stats)
            # A checkpoint taken before a pruning schedule reaches its sparsity ranks after all
            # those that have it, so the evaluated model is always at the target sparsity.
            pruning = getattr(self.hparams, "pruning", None)
            early = pruning is not None and not pruning.at_target(self.optimizer_step)
            self.checkpointer.save_and_keep_only(
                meta={"WER": stats["WER"] + (1000.0 if early else 0.0), "dev_WER": stats["WER"]},
                min_keys=["WER"])
        elif stage == sb.Stage.TEST:
            if self.lm_decoder is not None:
                stats["WER_LM"] = self.wer_lm_metric.summarize("error_rate")
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current,
                            "test split": self.test_split}, test_stats=stats)
            self.test_stats = stats
            if if_main_process():
                out = Path(self.hparams.output_folder)
                with open(out / f"wer_{self.test_split}.txt", "w") as w:
                    self.wer_metric.write_stats(w)
                if self.lm_decoder is not None:
                    with open(out / f"wer_lm_{self.test_split}.txt", "w") as w:
                        self.wer_lm_metric.write_stats(w)


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


def ctc_frames_needed(labels):
    """Least number of CTC frames for a label sequence: one per label, one blank per repeat."""
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


def usable_utterances(data, alphabet, frames_of, max_duration):
    """Split manifest rows into usable ones and ``(ID, reason)`` for the rest.

    A row is dropped if its transcript holds characters outside ``alphabet``, if its audio is
    longer than ``max_duration`` seconds, or if the backbone gives fewer frames than CTC needs.
    """
    allowed = set(alphabet)
    kept, dropped = {}, []
    for uid, row in data.items():
        text, duration = row["wrd"], float(row["duration"])
        bad = sorted(set(text) - allowed)
        if bad:
            dropped.append((uid, f"transcript has characters outside the label set: {bad}"))
        elif not text.strip():
            dropped.append((uid, "empty transcript"))
        elif duration > max_duration:
            dropped.append((uid, f"longer than avoid_if_longer_than ({duration:.1f} s)"))
        elif frames_of(duration) < ctc_frames_needed(text):
            dropped.append((uid, f"too short for CTC: {frames_of(duration)} frames for "
                                 f"{ctc_frames_needed(text)} labels"))
        else:
            kept[uid] = row
    return kept, dropped


def dataio_prepare(hparams, manifests, label_encoder, ssl_model):
    """Datasets for train, valid and every test split, with bad utterances reported and skipped."""
    def frames_of(seconds):
        return feature_frames(ssl_model, int(seconds * 16000))

    def load(csv_paths):
        data = {}
        for path in csv_paths:
            data.update(sb.dataio.dataio.load_data_csv(path))
        kept, dropped = usable_utterances(data, hparams["alphabet"], frames_of,
                                          hparams["avoid_if_longer_than"])
        for uid, reason in dropped:
            logger.warning("Skipping %s: %s", uid, reason)
        return kept

    def dataset(rows, sort="ascending"):
        data = sb.dataio.dataset.DynamicItemDataset(rows)
        if sort in ("ascending", "descending"):
            data = data.filtered_sorted(sort_key="duration", reverse=sort == "descending")
        return data

    train = dataset(load([manifests["train"]]), hparams["sorting"])
    if hparams["sorting"] == "random":
        hparams["train_dataloader_opts"]["shuffle"] = True
    valid = dataset(load([manifests[s] for s in hparams["dev_splits"]]))
    tests = {s: dataset(load([manifests[s]])) for s in hparams["test_splits"]}
    datasets = [train, valid, *tests.values()]

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(wrd):
        return torch.LongTensor(label_encoder.encode_sequence(list(wrd)))

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens"])
    return train, valid, tests


def resolve_hparams_path(path):
    """The hparams file, relative to the current directory or to this recipe folder."""
    for candidate in (Path(path), RECIPE_DIR / path):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"hparams file {path} not found in {Path.cwd()} nor in {RECIPE_DIR}")


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


def lm_decoder_for(hparams, label_encoder):
    """The KenLM beam-search decoder, or None without ``lm_decoding``.

    Without ``kenlm_model`` an n-gram is estimated from the transcripts of ``lm_text_splits``
    (for the embedded default: every training split, whose sentences are disjoint from the test
    sentences).
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
            run_on_main(build_ngram, args=[text, kenlm_model, hparams["lm_order"]])
    labels = ["" if i == hparams["blank_index"] else label_encoder.ind2lab[i]
              for i in range(len(label_encoder))]
    return CTCBeamLMDecoder(labels, str(kenlm_model), beam_width=hparams["lm_beam_width"],
                            lm_weight=hparams["lm_weight"],
                            word_insertion=hparams["lm_word_insertion"])


def load_finetuned(folder, recoverables):
    """Load the best (lowest dev WER) checkpoint of the run in ``folder`` into ``recoverables``."""
    save = Path(folder) / "save"
    ckpt = sb.utils.checkpoints.Checkpointer(save).find_checkpoint(min_key="WER") \
        if save.is_dir() else None
    if ckpt is None:
        raise FileNotFoundError(
            f"init_from={folder}: no checkpoint in {save}. This strategy starts from a fine-tuned "
            f"model: run weight fine-tuning first (python train.py hparams/weight_ft.yaml with the "
            f"same data and backbone) or pass --init_from=<its output folder>.")
    for name, module in recoverables.items():
        state = torch.load(ckpt.paramfiles[name], map_location="cpu")
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"init_from={folder}: its {name} does not fit this model "
                             f"(another backbone or strategy?): {str(err)[:300]}") from err
    logger.info("Initialised from %s (dev WER %.2f)", ckpt.path,
                ckpt.meta.get("dev_WER", ckpt.meta["WER"]))


def setup_strategy(hparams):
    """Apply the yaml's strategy keys to the backbone before training: ``init_from``, ``masks``
    (S3-Router) and ``pruning`` (OMP, IMP, PARP)."""
    ssl = hparams["ssl"]
    if hparams.get("init_from"):
        load_finetuned(hparams["init_from"], {"ssl": ssl, "model": hparams["model"]})
    if hparams.get("masks"):
        names = add_masks(ssl, seed=hparams["seed"], **hparams["masks"])
        logger.info("Learned masks on %d layers (%s), backbone weights frozen", len(names),
                    hparams["masks"])
    if hparams.get("pruning"):
        hparams["pruning"].setup(ssl)


def sparsity_of(hparams):
    """The strategy's nominal sparsity (mean over blocks for a per-block list), 0 if dense."""
    if hparams.get("masks"):
        value = hparams["masks"].get("sparsity", 0.1)
    elif hparams.get("pruning"):
        value = hparams["pruning"].sparsity
    else:
        return 0.0
    return float(sum(value) / len(value)) if isinstance(value, (list, tuple)) else float(value)


def cost_report(asr, hparams):
    """Parameters, FLOPs, latency and sparsity of the model that serves one task, measured on a
    copy with the masks folded into the weights (what would be deployed)."""
    ssl, head, ctc_lin = asr.modules.ssl, asr.hparams.head, asr.hparams.ctc_lin
    ssl = getattr(ssl, "module", ssl)
    trainable = count_parameters(torch.nn.ModuleList([ssl, head, ctc_lin]), trainable_only=True)
    ssl = fold(copy.deepcopy(ssl))
    hf = ssl.model

    def forward(wav):
        return ctc_lin(head(ssl(wav)))

    modules = torch.nn.ModuleList([ssl, head, ctc_lin])
    modules.eval()  # inference cost: no dropout, no masking
    cost = measure_cost(forward, seconds=10, repeats=hparams["cost_repeats"],
                        threads=hparams["cost_threads"])
    # A strategy that changes weights stores a whole model per task.
    storage = sum(p.numel() * p.element_size() for p in modules.parameters())
    backbone = sum(p.numel() * p.element_size() for p in ssl.parameters())
    return {"backbone_bytes": backbone, "sparsity_linear": round(weight_sparsity(hf), 4), "params_total": count_parameters(modules),
            "params_transformer": count_parameters(hf.encoder),
            "params_trainable": trainable, "storage_bytes_per_task": storage,
            "flops_10s": cost["flops_10s"], "latency_ms_10s": cost["latency_ms_10s"],
            "rtf": cost["rtf"], "latency_threads": cost["latency_threads"]}


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    hparams_file = resolve_hparams_path(hparams_file)
    sb.utils.distributed.ddp_init_group(run_opts)
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, overrides)
    except BackboneUnavailableError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"],
                                   hyperparams_to_save=hparams_file, overrides=overrides)
    ssl = hparams["ssl"]
    if ssl.ssl_init == "random":
        logger.warning("The backbone is randomly initialised, not pretrained (%s)", hparams["ssl_hub"])
    label_encoder = label_encoder_for(hparams)
    try:
        manifests = prepare_data(hparams)
        setup_strategy(hparams)
        lm_decoder = lm_decoder_for(hparams, label_encoder)
    except (FileNotFoundError, ValueError) as err:  # missing data, wrong init_from, bad keys
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    train, valid, tests = dataio_prepare(hparams, manifests, label_encoder, ssl.model)

    # A DataLoader iterator draws a seed from the global torch generator when it starts. Give the
    # training loader its own, so that a run resumed mid-epoch draws what an uninterrupted one does.
    hparams["train_dataloader_opts"].setdefault(
        "generator", torch.Generator().manual_seed(hparams["seed"]))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        logger.info("Distributed training: %d processes (%s backend)",
                    torch.distributed.get_world_size(), torch.distributed.get_backend())
    asr = ASR(modules=hparams["modules"], hparams=hparams, run_opts=run_opts,
              checkpointer=hparams["checkpointer"])
    asr.label_encoder = label_encoder
    asr.lm_decoder = lm_decoder
    share_checkpoint_dir(asr.checkpointer)
    asr.fit(hparams["epoch_counter"], train, valid,
            train_loader_kwargs=hparams["train_dataloader_opts"],
            valid_loader_kwargs=hparams["valid_dataloader_opts"])
    hparams["run_state"].stop_timer()

    results_file = Path(hparams["output_folder"]) / "results.json"
    results = {"strategy": hparams["strategy"], "ssl_hub": str(hparams["ssl_hub"]),
               "ssl_init": ssl.ssl_init, "train_split": "+".join(hparams["train_splits"]),
               "train_seconds": round(hparams["run_state"].elapsed(), 1)}
    for split, dataset in tests.items():
        asr.test_split = split
        asr.evaluate(dataset, min_key="WER", test_loader_kwargs=hparams["test_dataloader_opts"])
        tag = split.replace("-", "_")
        results[f"wer_{tag}"] = round(asr.test_stats["WER"], 2)
        results[f"cer_{tag}"] = round(asr.test_stats["CER"], 2)
        if "WER_LM" in asr.test_stats:
            results[f"wer_{tag}_lm"] = round(asr.test_stats["WER_LM"], 2)
    if if_main_process():
        results.update(cost_report(asr, hparams))
        results["sparsity"] = sparsity_of(hparams)
        if hparams.get("masks") and not hparams.get("init_from"):
            # Masks over the shared frozen backbone: a task is its mask file (bits + head).
            task_file = Path(hparams["output_folder"]) / "task_mask.safetensors"
            results["storage_bytes_per_task"] = save_mask(
                task_file, asr.modules.ssl, head=hparams["model"], strategy=hparams["strategy"],
                train_split=results["train_split"], **hparams["masks"])
        results["storage_share_of_backbone"] = round(
            results["storage_bytes_per_task"] / results["backbone_bytes"], 4)
        update_results(results_file, **results)
        logger.info("Results in %s", results_file)
        print(summary(results))
    return 0


def summary(results):
    """The run's accuracy and cost, as printed at the end."""
    lines = [f"{results['strategy']} on {results['train_split']} (sparsity {results['sparsity']})"]
    for split in ("test_clean", "test_other"):
        if results.get(f"wer_{split}") is not None:
            lm = results.get(f"wer_{split}_lm")
            lines.append(f"  {split.replace('_', '-')}: WER {results[f'wer_{split}']:.2f} greedy"
                         + (f", {lm:.2f} with LM" if lm is not None else "")
                         + f" | CER {results[f'cer_{split}']:.2f}")
    lines.append(f"  params {results['params_total']:,} (trainable {results['params_trainable']:,})"
                 f" | {results['flops_10s'] / 1e9:.2f} GFLOPs / 10 s | "
                 f"{results['latency_ms_10s']:.0f} ms / 10 s on {results['latency_threads']} "
                 f"thread(s), RTF {results['rtf']:.4f}")
    lines.append(f"  storage per task {results['storage_bytes_per_task']:,} bytes "
                 f"({results['storage_share_of_backbone']:.1%} of the backbone)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
