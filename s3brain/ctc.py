"""CTC fine-tuning of a speech SSL backbone under any strategy: the Brain and the helpers the
recipes share (LibriSpeech characters, CommonVoice phonemes).

A recipe's ``train.py`` keeps what is its own (data preparation, label encoder, datasets) and
uses from here:

- ``CTCFineTuning``: the ``sb.Brain`` (backbone -> head -> CTC; separate optimizers for the
  backbone and the head; backbone held fixed for ``ssl_frozen_steps``; pruning hooks; greedy and
  KenLM decoding; error rates by words and characters, or by phonemes);
- ``start_experiment`` and ``fit``: command line, yaml, experiment folder, training;
- ``setup_strategy``: sets up the yaml's ``strategies`` (``s3brain.strategies``);
- ``usable_utterances``: rows CTC can learn from;
- ``evaluate_and_report``: test every split, measure the cost, write ``results.json``.
"""

import copy
import inspect
import logging
import shutil
import time
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process

from s3brain.audio import backbone_rate
from s3brain.checkpoint import share_checkpoint_dir
from s3brain.early_exit import early_exit, exit_inputs, flops_at_exit

from s3brain.efficiency import (count_parameters, measure_cost, onnx_latency_ms,
                                peak_memory_mb)
from s3brain.finetuning import BackboneFineTuning
from s3brain.families import transformer_blocks
from s3brain.masks import weight_sparsity
from s3brain.results import update_results
from s3brain.strategies import (EarlyExit, deployable, run_sparsity, setup_strategies, strategy_modules,
                                 task_payload)
from s3brain.strategies import encode as encode_with_strategies

logger = logging.getLogger(__name__)


class CTCFineTuning(BackboneFineTuning):
    """Backbone -> head -> CTC over characters (``units = "chars"``: WER and CER) or phonemes
    (``units = "phonemes"``: PER). The recipe sets ``label_encoder`` and ``lm_decoder``."""

    units = "chars"
    lm_decoder = None
    label_encoder = None

    @property
    def error_key(self):
        """The error rate's name: ``WER`` for characters, ``PER`` for phonemes."""
        return "WER" if self.units == "chars" else "PER"

    @property
    def early_exit(self):
        """The run's ``EarlyExit`` strategy (exits are task outputs: this Brain decodes them),
        or None."""
        return next((s for s in self.strategies if isinstance(s, EarlyExit)), None)

    @property
    def exit_heads(self):
        """The early-exit heads (one per block but the last), or None."""
        return self.early_exit.heads if self.early_exit is not None else None

    def compute_forward(self, batch, stage):
        """Backbone (as the strategies run it) -> head -> log-probabilities: ``(log_probs,
        lengths, exit log-probs or None)``."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        with torch.set_grad_enabled(torch.is_grad_enabled() and not (
                stage == sb.Stage.TRAIN and self.ssl_frozen())):
            # a strategy may change the forward (token dropping: new lengths)
            feats, wav_lens = encode_with_strategies(self.strategies, self.modules.ssl, wavs,
                                                     wav_lens, stage)
        exits = None
        if self.exit_heads is not None:  # the backbone returns every block's output
            hiddens, feats = feats, feats[-1]
            ssl = getattr(self.modules.ssl, "module", self.modules.ssl)
            exits = [self.hparams.log_softmax(head(h)) for head, h in
                     zip(self.exit_heads, exit_inputs(ssl, hiddens, self.exit_heads))]
        logits = self.modules.ctc_lin(self.modules.head(feats))
        return self.hparams.log_softmax(logits), wav_lens, exits

    def references(self, batch):
        """The batch's reference words (characters) or phonemes."""
        if self.units == "chars":
            return [w.split(" ") for w in batch.wrd]
        return [p.split() for p in batch.phn]

    def hypothesis(self, token_ids):
        """Token ids -> words (characters joined, split at spaces) or phonemes. Outputs beyond
        the label set (a head wider than the phoneme set) are dropped."""
        known = self.label_encoder.ind2lab
        labels = self.label_encoder.decode_ndim([i for i in token_ids if i in known])
        return "".join(labels).split() if self.units == "chars" else list(labels)

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss (with the exits' and the strategies' terms); at evaluation, the decoded
        hypotheses go into the metrics."""
        p_ctc, wav_lens, exits = predictions
        tokens, tokens_lens = batch.tokens
        loss = self.hparams.ctc_cost(p_ctc, tokens, wav_lens, tokens_lens)
        for strategy in self.strategies:
            extra = strategy.loss(predictions, batch, stage)
            if extra is not None:
                loss = loss + extra
        if exits:
            exit_loss = sum(self.hparams.ctc_cost(e, tokens, wav_lens, tokens_lens)
                            for e in exits) / len(exits)
            two_step = self.early_exit.training == "two_step"
            loss = exit_loss if two_step else loss + exit_loss
        if stage != sb.Stage.TRAIN:
            if exits is not None:  # decode as deployed: each utterance stops at its exit
                hyps = self.early_exit_decode(batch)
            else:
                hyps = sb.decoders.ctc_greedy_decode(p_ctc, wav_lens,
                                                     blank_id=self.hparams.blank_index)
            predicted = [self.hypothesis(h) for h in hyps]
            target = self.references(batch)
            self.error_metric.append(batch.id, predicted, target)
            if self.units == "chars":
                self.cer_metric.append(batch.id, predicted, target)
            if stage == sb.Stage.TEST and self.lm_decoder is not None:
                frames = (wav_lens * p_ctc.shape[1]).round().int().tolist()
                log_probs = p_ctc.detach().float().cpu().numpy()
                predicted = [self.lm_decoder.decode(lp[:n]) for lp, n in zip(log_probs, frames)]
                self.lm_metric.append(batch.id, predicted, target)
        return loss

    @torch.no_grad()
    def early_exit_decode(self, batch):
        """Greedy CTC of each utterance at its early exit; records exit blocks and time."""
        ssl = self.modules.ssl
        ssl = getattr(ssl, "module", ssl)
        blocks = len(transformer_blocks(ssl))

        def head_fn(i, hidden):
            """Log-probabilities of block ``i``'s exit (the final head after the last block)."""
            if ssl.output_norm:
                hidden = torch.nn.functional.layer_norm(hidden, hidden.shape[-2:])
            if i == blocks:
                return self.modules.ctc_lin(self.modules.head(hidden))
            return self.exit_heads[i - 1](hidden)

        wavs, wav_lens = batch.sig
        hyps = []
        for wav, rel in zip(wavs, wav_lens):
            wav = wav[: int(round(float(rel) * wavs.shape[1]))].unsqueeze(0)
            if ssl.normalize_wav:
                wav = torch.nn.functional.layer_norm(wav, wav.shape[1:])
            start = time.perf_counter()
            strategy = self.early_exit
            log_probs, block = early_exit(ssl.model, self.exit_heads, wav, strategy.criterion,
                                          strategy.threshold, strategy.min_layer, head_fn)
            strategy.record(block, time.perf_counter() - start,
                            wav.shape[1] / backbone_rate(ssl))
            hyps += sb.decoders.ctc_greedy_decode(log_probs,
                                                  torch.ones(1, device=log_probs.device),
                                                  blank_id=self.hparams.blank_index)
        return hyps

    def on_stage_start(self, stage, epoch=None):
        """New metrics; the strategies' ``before_eval`` and ``stage_start``."""
        if stage != sb.Stage.TRAIN:
            self.error_metric = self.hparams.error_rate_computer()
            self.cer_metric = self.hparams.cer_computer()
            self.lm_metric = self.hparams.error_rate_computer()
            self.strategies_before_eval(stage)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the stage; at VALID anneal and checkpoint, at TEST write the error-rate files."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        key = self.error_key
        if self.units == "chars":
            stats["CER"] = self.cer_metric.summarize("error_rate")
        stats[key] = self.error_metric.summarize("error_rate")
        stats.update(self.strategy_stats(stage))
        if stage == sb.Stage.VALID:
            lrs = self.anneal(stats)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, **lrs}, train_stats=self.train_stats, valid_stats=stats)
            # A checkpoint taken before a pruning schedule reaches its sparsity ranks after all
            # those that have it, so the evaluated model is always at the target sparsity.
            early = not self.strategies_at_target()
            self.checkpointer.save_and_keep_only(
                meta={key: stats[key] + (1000.0 if early else 0.0), f"dev_{key}": stats[key]},
                min_keys=[key])
        elif stage == sb.Stage.TEST:
            if self.lm_decoder is not None:
                stats[f"{key}_LM"] = self.lm_metric.summarize("error_rate")
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current,
                            "test split": self.test_split}, test_stats=stats)
            self.test_stats = stats
            if if_main_process():
                out = Path(self.hparams.output_folder)
                with open(out / f"{key.lower()}_{self.test_split}.txt", "w") as w:
                    self.error_metric.write_stats(w)
                if self.lm_decoder is not None:
                    with open(out / f"{key.lower()}_lm_{self.test_split}.txt", "w") as w:
                        self.lm_metric.write_stats(w)


def start_experiment(argv, recipe_dir, script=None):
    """Parse the command line, load the yaml (path relative to the current directory or the
    recipe folder) and create the experiment folder, with a copy of ``script`` (default: the
    calling file); returns ``(hparams, run_opts)``."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    hparams_file = resolve_hparams_path(hparams_file, recipe_dir)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"],
                                   hyperparams_to_save=hparams_file, overrides=overrides)
    if if_main_process():  # SpeechBrain copies the calling module (this one); add the recipe's
        shutil.copy(script or inspect.stack()[1].filename, hparams["output_folder"])
    if hparams["ssl"].ssl_init == "random":
        logger.warning("The backbone is randomly initialised, not pretrained (%s)",
                       hparams["ssl_hub"])
    return hparams, run_opts


def fit(brain_class, hparams, run_opts, train, valid, label_encoder, lm_decoder=None):
    """Build the Brain and train it (resuming from the last checkpoint if there is one)."""
    # A DataLoader iterator draws a seed from the global torch generator when it starts. Give the
    # training loader its own, so that a run resumed mid-epoch draws what an uninterrupted one does.
    hparams["train_dataloader_opts"].setdefault(
        "generator", torch.Generator().manual_seed(hparams["seed"]))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        logger.info("Distributed training: %d processes (%s backend)",
                    torch.distributed.get_world_size(), torch.distributed.get_backend())
    # The strategies' extra modules (adapters, a token dropper) go on the device and into the
    # checkpoint beside the yaml's.
    for name, module in strategy_modules(hparams.get("strategies") or []).items():
        hparams["modules"].setdefault(name, module)
        if name not in hparams["checkpointer"].recoverables:
            hparams["checkpointer"].add_recoverable(name, module)
    brain = brain_class(modules=hparams["modules"], hparams=hparams, run_opts=run_opts,
                        checkpointer=hparams["checkpointer"])
    brain.label_encoder = label_encoder
    brain.lm_decoder = lm_decoder
    share_checkpoint_dir(brain.checkpointer)
    brain.fit(hparams["epoch_counter"], train, valid,
              train_loader_kwargs=hparams["train_dataloader_opts"],
              valid_loader_kwargs=hparams["valid_dataloader_opts"])
    hparams["run_state"].stop_timer()
    return brain


def resolve_hparams_path(path, recipe_dir):
    """The hparams file, relative to the current directory or to the recipe folder."""
    for candidate in (Path(path), Path(recipe_dir) / path):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"hparams file {path} not found in {Path.cwd()} nor in {recipe_dir}")


def encode(ssl, wavs, wav_lens=None, downsampler=None):
    """Backbone features of a batch, with the optional input downsampling (and upsampling of
    the output frames) around the backbone."""
    if downsampler is None:
        return ssl(wavs, wav_lens)
    return downsampler.upsample(ssl(downsampler(wavs), wav_lens))


def frames_function(hparams):
    """``seconds -> CTC frames`` of the recipe's model (with a strategy's changed forward, e.g.
    input downsampling)."""
    from s3brain.backbone import feature_frames

    hf, strategies = hparams["ssl"].model, hparams.get("strategies") or []
    rate = backbone_rate(hparams["ssl"])  # audio reaches the backbone at its own rate

    def frames(seconds):
        """CTC frames of ``seconds`` of audio."""
        samples = int(seconds * rate)
        counts = [s.output_frames(hf, samples) for s in strategies]
        counts = [c for c in counts if c is not None]
        return counts[0] if counts else feature_frames(hf, samples)

    return frames


def ctc_frames_needed(labels):
    """Least number of CTC frames for a label sequence: one per label, one blank per repeat."""
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


def usable_utterances(data, labels_of, allowed, frames_of, max_duration):
    """Split manifest rows into usable ones and ``(ID, reason)`` for the rest.

    ``labels_of(row)`` gives the row's label sequence. A row is dropped if a label is not in
    ``allowed``, if it has no labels, if its audio is longer than ``max_duration`` seconds, or if
    the backbone gives fewer frames (``frames_of(seconds)``) than CTC needs.
    """
    kept, dropped = {}, []
    for uid, row in data.items():
        labels, duration = labels_of(row), float(row["duration"])
        bad = sorted(set(labels) - set(allowed))
        if bad:
            dropped.append((uid, f"transcript has symbols outside the label set: {bad}"))
        elif not "".join(labels).strip():
            dropped.append((uid, "empty transcript"))
        elif duration > max_duration:
            dropped.append((uid, f"longer than avoid_if_longer_than ({duration:.1f} s)"))
        elif frames_of(duration) < ctc_frames_needed(labels):
            dropped.append((uid, f"too short for CTC: {frames_of(duration)} frames for "
                                 f"{ctc_frames_needed(labels)} labels"))
        else:
            kept[uid] = row
    return kept, dropped


def load_finetuned(folder, recoverables, key="WER"):
    """Load the best (lowest dev ``key``) checkpoint of the run in ``folder`` into
    ``recoverables``."""
    save = Path(folder) / "save"
    ckpt = sb.utils.checkpoints.Checkpointer(save).find_checkpoint(min_key=key) \
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
    logger.info("Initialised from %s (dev %s %.2f)", ckpt.path, key,
                ckpt.meta.get(f"dev_{key}", ckpt.meta[key]))


def setup_strategy(hparams, key="WER"):
    """Set up the yaml's ``strategies`` (``s3brain.strategies``, in list order) on the backbone
    before training (``key`` is kept for the recipes' calls: each strategy that loads a
    checkpoint has its own)."""
    ssl = hparams["ssl"]
    setup_strategies(hparams.get("strategies") or [], ssl, hparams)


def unwrapped_module(module):
    """The module inside a DDP wrapper (DDP wraps the modules that have parameters)."""
    return getattr(module, "module", module)


def cost_report(brain, hparams):
    """Parameters, FLOPs, latency and sparsity of the model that serves one task, measured on a
    copy made deployable by the strategies (masks folded into the weights, structured pruning
    physically shrunk): what would be deployed. The measured copy is on the CPU,
    whatever device trained the model."""
    def unwrapped(module):  # DDP wraps the modules that have parameters
        """The module inside a DDP wrapper."""
        return getattr(module, "module", module)

    live = {"ssl": unwrapped(brain.modules.ssl), "head": brain.hparams.head,
            "ctc_lin": brain.hparams.ctc_lin,
            "extra": [unwrapped(m) for k, m in brain.modules.items()
                      if k not in ("ssl", "head", "ctc_lin")]}
    trainable = count_parameters(
        torch.nn.ModuleList([live["ssl"], live["head"], live["ctc_lin"], *live["extra"]]),
        trainable_only=True)
    # One deep copy of everything, so modules shared between entries stay shared in the copy.
    copies = copy.deepcopy(live)
    for module in [*copies["extra"], *(copies[k] for k in ("ssl", "head", "ctc_lin"))]:
        if module is not None:
            module.cpu()
    ssl, head, ctc_lin = deployable([], copies["ssl"]), copies["head"], copies["ctc_lin"]
    extra = copies["extra"]
    rate = backbone_rate(ssl)
    backbone = sum(p.numel() * p.element_size() for p in ssl.parameters())  # before shrinking
    # As deployed: structured pruning shrunk; token dropping at the share of frames it kept on
    # the first test split (with its detector's cost); input downsampling around the backbone
    ssl = deployable(hparams.get("strategies") or [], ssl).cpu()
    hf = ssl.model

    def forward(wav):
        """Log-probabilities of the deployed model (the cost measurement's forward)."""
        feats = ssl(wav, None)
        return ctc_lin(head(feats[-1] if feats.dim() == 4 else feats))  # all blocks' outputs

    modules = torch.nn.ModuleList([ssl, head, ctc_lin, *extra])  # extra: adapters, exit heads
    modules.eval()  # inference cost: no dropout, no masking
    cost = measure_cost(forward, seconds=10, sample_rate=rate, repeats=hparams["cost_repeats"],
                        threads=hparams["cost_threads"])
    wav = torch.randn(1, 10 * rate, generator=torch.Generator().manual_seed(0)) * 0.1
    cost["peak_memory_mb_10s"] = round(peak_memory_mb(forward, wav), 1)

    def deployed(wav):  # the wrapper's path, written so that it traces with any length
        """The deployed model's path, written so that it traces to ONNX with any length."""
        if hasattr(ssl, "before"):  # e.g. input downsampling
            wav = ssl.before(wav)
        if ssl.normalize_wav:
            wav = (wav - wav.mean(1, keepdim=True)) / torch.sqrt(
                wav.var(1, unbiased=False, keepdim=True) + 1e-5)
        feats = hf(wav).last_hidden_state
        if ssl.output_norm:
            feats = torch.nn.functional.layer_norm(feats, feats.shape[1:])
        if hasattr(ssl, "after"):
            feats = ssl.after(feats)
        return ctc_lin(head(feats))

    try:  # the paper's deployment path; a failed export must not lose the run's results
        if not getattr(ssl, "onnx_exportable", True):
            raise NotImplementedError("the export of token dropping is not written yet")
        onnx_ms, difference = onnx_latency_ms(deployed, [hf, head, ctc_lin, *extra], wav,
                                              repeats=hparams["cost_repeats"],
                                              threads=hparams["cost_threads"])
        cost["onnx_latency_ms_10s"] = round(onnx_ms, 2)
        if difference > 1e-3:
            logger.warning("ONNX output differs from torch by %.2g", difference)
    except Exception as err:  # noqa: BLE001
        logger.warning("ONNX export or onnxruntime timing failed: %s", err)
        cost["onnx_latency_ms_10s"] = None
    # A strategy that changes weights stores a whole model per task.
    storage = sum(p.numel() * p.element_size() for p in modules.parameters())
    return {"backbone_bytes": backbone, "sparsity_linear": round(weight_sparsity(hf), 4),
            "params_total": count_parameters(modules),
            "params_transformer": count_parameters(hf.encoder),
            "params_trainable": trainable, "storage_bytes_per_task": storage,
            "flops_10s": cost["flops_10s"], "latency_ms_10s": cost["latency_ms_10s"],
            "rtf": cost["rtf"], "latency_threads": cost["latency_threads"],
            "peak_memory_mb_10s": cost["peak_memory_mb_10s"],
            "onnx_latency_ms_10s": cost["onnx_latency_ms_10s"]}


def evaluate_and_report(brain, hparams, tests, results):
    """Test every split (best checkpoint), measure the cost, save the S3-Router task file, write
    ``results.json`` and print the summary. ``results`` holds the run's descriptive keys."""
    key = brain.error_key
    results["train_seconds"] = round(hparams["run_state"].elapsed(), 1)
    for split, dataset in tests.items():
        brain.test_split = split
        brain.evaluate(dataset, min_key=key, test_loader_kwargs=hparams["test_dataloader_opts"])
        tag = split.replace("-", "_")
        results[f"{key.lower()}_{tag}"] = round(brain.test_stats[key], 2)
        if "CER" in brain.test_stats:
            results[f"cer_{tag}"] = round(brain.test_stats["CER"], 2)
        if f"{key}_LM" in brain.test_stats:
            results[f"{key.lower()}_{tag}_lm"] = round(brain.test_stats[f"{key}_LM"], 2)
        if "exit_block" in brain.test_stats:
            results[f"mean_exit_block_{tag}"] = round(brain.test_stats["exit_block"], 3)
            results[f"exit_rtf_{tag}"] = round(brain.test_stats["exit_rtf"], 5)
        if "kept_share" in brain.test_stats:  # token dropping: share of frames kept
            results[f"kept_share_{tag}"] = brain.test_stats["kept_share"]
    if not if_main_process():
        return results
    results.update(cost_report(brain, hparams))
    exit_keys = [k for k in results if k.startswith("mean_exit_block_")]
    if exit_keys:  # FLOPs as deployed: at the mean exit block of the first test split
        results["flops_10s_all_blocks"] = results["flops_10s"]
        results["flops_10s"] = flops_at_exit(brain.modules.ssl, results["flops_10s"],
                                             results[exit_keys[0]])
    strategies = hparams.get("strategies") or []
    results["sparsity"] = run_sparsity(strategies)
    # On a shared frozen backbone a task is its payload (S3-Router: the mask file, bits + head).
    info = {k: results[k] for k in ("strategy", "train_split", "language") if k in results}
    payload = task_payload(strategies, Path(hparams["output_folder"]),
                           unwrapped_module(brain.modules.ssl), hparams["model"], info)
    if payload is not None:
        results["storage_bytes_per_task"] = payload
    results["storage_share_of_backbone"] = round(
        results["storage_bytes_per_task"] / results["backbone_bytes"], 4)
    results_file = Path(hparams["output_folder"]) / "results.json"
    update_results(results_file, **results)
    logger.info("Results in %s", results_file)
    print(summary(results, key))
    return results


def summary(results, key="WER"):
    """The run's accuracy and cost, as printed at the end of a run."""
    name = key.lower()
    lines = [f"{results['strategy']} on {results.get('train_split')} "
             f"(sparsity {results['sparsity']})"]
    for result_key in sorted(results):
        if result_key.startswith(f"{name}_") and not result_key.endswith("_lm"):
            split = result_key[len(name) + 1:]
            lm = results.get(f"{result_key}_lm")
            cer = results.get(f"cer_{split}")
            lines.append(f"  {split.replace('_', '-')}: {key} {results[result_key]:.2f} greedy"
                         + (f", {lm:.2f} with LM" if lm is not None else "")
                         + (f" | CER {cer:.2f}" if cer is not None else ""))
    lines.append(f"  params {results['params_total']:,} (trainable {results['params_trainable']:,})"
                 f" | {results['flops_10s'] / 1e9:.2f} GFLOPs / 10 s | "
                 f"{results['latency_ms_10s']:.0f} ms / 10 s on {results['latency_threads']} "
                 f"thread(s), RTF {results['rtf']:.4f}")
    if results.get("onnx_latency_ms_10s") is not None:
        lines.append(f"  onnxruntime {results['onnx_latency_ms_10s']:.0f} ms / 10 s | peak memory "
                     f"{results['peak_memory_mb_10s']:.0f} MiB")
    lines.append(f"  storage per task {results['storage_bytes_per_task']:,} bytes "
                 f"({results['storage_share_of_backbone']:.1%} of the backbone)")
    return "\n".join(lines)
