"""Utterance-level SUPERB-style tasks (keyword spotting, speaker identification, intent
classification with slots, paralinguistics) on a speech SSL backbone under any strategy.

- ``WeightedLayerSum``: SUPERB's learned, softmax-normalised weighted sum of every hidden layer.
- ``UtteranceHead``: weighted sum, a projection, mean pooling over the real frames, and one linear
  classifier per target (one target for most tasks; action, object and location for intent).
- ``UtteranceClassification``: the ``sb.Brain`` (cross entropy summed over targets; accuracy per
  target, accuracy of all targets at once, F1 over the slot targets).
- ``slot_f1``: F1 over (slot, value) pairs, ``none`` values left out.
- ``run_task``: what a task's ``train.py`` calls: manifests, label encoders, head, strategy,
  training, test, cost and ``results.json`` (with the task's mask file for S3-Router).

Example
-------
>>> import torch
>>> head = UtteranceHead(layers=3, input_size=8, classes={"label": 4}, projection=6)
>>> out = head(torch.randn(3, 2, 5, 8), torch.tensor([1.0, 0.6]))
>>> out["label"].shape
torch.Size([2, 4])
>>> slot_f1([{"object": "lights", "location": "none"}], [{"object": "lights", "location": "kitchen"}])
0.6667
"""

import copy
import logging
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process
from torch import nn

from s3brain.audio import backbone_rate, read_audio
from s3brain.backbone import BackboneUnavailableError, hidden_layer_count, hidden_size
from s3brain.ctc import fit, setup_strategy, start_experiment
from s3brain.efficiency import count_parameters, measure_cost, peak_memory_mb
from s3brain.finetuning import BackboneFineTuning
from s3brain.results import update_results
from s3brain.strategies import deployable, encode, run_sparsity, task_payload

logger = logging.getLogger(__name__)


class WeightedLayerSum(nn.Module):
    """``sum_l softmax(w)_l * hidden_l`` over the stacked hidden layers ``[L, B, T, D]``."""

    def __init__(self, layers):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(layers))

    def forward(self, hiddens):
        """See the class docstring."""
        if hiddens.dim() != 4 or hiddens.shape[0] != self.weights.numel():
            raise ValueError(f"the weighted layer sum was built for {self.weights.numel()} hidden "
                             f"layers [L, B, T, D], got shape {tuple(hiddens.shape)}: size it with "
                             f"s3brain.backbone.hidden_layer_count and load the backbone with "
                             f"output_all_hiddens")
        w = torch.softmax(self.weights, dim=0)
        return (w.view(-1, 1, 1, 1) * hiddens).sum(0)


class UtteranceHead(nn.Module):
    """Weighted layer sum -> linear projection -> mean over real frames -> a classifier per
    target. ``classes`` maps each target to its number of classes."""

    def __init__(self, layers, input_size, classes, projection=256):
        super().__init__()
        self.layer_sum = WeightedLayerSum(layers)
        self.projection = nn.Linear(input_size, projection)
        self.classifiers = nn.ModuleDict({t: nn.Linear(projection, n) for t, n in classes.items()})

    def forward(self, hiddens, wav_lens=None):
        """See the class docstring."""
        x = self.projection(self.layer_sum(hiddens))
        frames = x.shape[1]
        if wav_lens is None:
            pooled = x.mean(1)
        else:
            lengths = (wav_lens * frames).round().clamp(min=1)
            mask = (torch.arange(frames, device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)
            pooled = (x * mask).sum(1) / lengths[:, None]
        return {t: clf(pooled) for t, clf in self.classifiers.items()}


def slot_f1(predicted, truth, none="none"):
    """F1 over (slot, value) pairs of a list of ``{slot: value}`` dicts, ``none`` values left out
    (a slot filled wrongly counts as a false positive and a false negative)."""
    tp = fp = fn = 0
    for p, t in zip(predicted, truth):
        p_pairs = {(k, v) for k, v in p.items() if v != none}
        t_pairs = {(k, v) for k, v in t.items() if v != none}
        tp += len(p_pairs & t_pairs)
        fp += len(p_pairs - t_pairs)
        fn += len(t_pairs - p_pairs)
    if tp == 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return round(2 * precision * recall / (precision + recall), 4)


def classification_metrics(predictions, truth, targets, slot_targets=(), encoders=None):
    """Accuracy of all ``targets`` at once (%), per target when there are several, and slot F1
    (%) over ``slot_targets`` (class indices decoded with ``encoders``)."""
    n = len(truth[targets[0]])
    correct = [all(predictions[t][i] == truth[t][i] for t in targets) for i in range(n)]
    stats = {"accuracy": 100.0 * sum(correct) / max(n, 1)}
    if len(targets) > 1:
        for t in targets:
            stats[f"{t}_accuracy"] = 100.0 * sum(
                p == g for p, g in zip(predictions[t], truth[t])) / max(n, 1)
    if slot_targets:
        decode = {t: encoders[t].ind2lab for t in slot_targets}
        pred = [{t: decode[t][predictions[t][i]] for t in slot_targets} for i in range(n)]
        gold = [{t: decode[t][truth[t][i]] for t in slot_targets} for i in range(n)]
        stats["slot_f1"] = 100.0 * slot_f1(pred, gold)
    return stats


class UtteranceClassification(BackboneFineTuning):
    """Backbone (every hidden layer) -> ``UtteranceHead`` -> cross entropy per target.

    The recipe sets ``targets`` (names of the label columns), ``slot_targets`` (those scored by
    slot F1) and ``label_encoder`` (a dict of ``CategoricalEncoder`` per target)."""

    targets = ("label",)
    slot_targets = ()

    def compute_forward(self, batch, stage):
        """Backbone (every hidden layer, as the strategies run it) -> head: logits per target."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        with torch.set_grad_enabled(torch.is_grad_enabled() and not (
                stage == sb.Stage.TRAIN and self.ssl_frozen())):
            hiddens, wav_lens = encode(self.strategies, self.modules.ssl, wavs, wav_lens, stage)
        return self.modules.head(hiddens, wav_lens)

    def compute_objectives(self, logits, batch, stage):
        """Cross entropy summed over targets (and the strategies' terms); predictions kept at
        evaluation."""
        loss = 0.0
        for target in self.targets:
            truth = getattr(batch, f"{target}_id").data[:, 0]
            loss = loss + nn.functional.cross_entropy(logits[target], truth)
            if stage != sb.Stage.TRAIN:
                self.predictions[target] += logits[target].argmax(-1).tolist()
                self.truth[target] += truth.tolist()
        for strategy in self.strategies:  # e.g. distillation
            extra = strategy.loss(logits, batch, stage)
            if extra is not None:
                loss = loss + extra
        return loss

    def on_stage_start(self, stage, epoch=None):
        """New prediction lists; before evaluation, the strategies' ``before_eval`` and
        ``stage_start``."""
        self.predictions = {t: [] for t in self.targets}
        self.truth = {t: [] for t in self.targets}
        if stage != sb.Stage.TRAIN:
            self.strategies_before_eval(stage)

    def stage_metrics(self):
        """This stage's metrics (``classification_metrics``) and ``error`` = 100 - accuracy."""
        stats = classification_metrics(self.predictions, self.truth, self.targets,
                                       self.slot_targets, self.label_encoder)
        stats["error"] = 100.0 - stats["accuracy"]
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the stage's metrics; at VALID anneal and checkpoint."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats.update(self.stage_metrics())
        stats.update(self.strategy_stats(stage))
        if stage == sb.Stage.VALID:
            lrs = self.anneal(stats)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, **lrs}, train_stats=self.train_stats, valid_stats=stats)
            # A checkpoint taken before a pruning schedule reaches its sparsity ranks last.
            early = not self.strategies_at_target()
            self.checkpointer.save_and_keep_only(
                meta={"error": stats["error"] + (1000.0 if early else 0.0),
                      "dev_accuracy": stats["accuracy"]},
                min_keys=["error"])
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats)
            self.test_stats = stats


def dataio_prepare(hparams, manifests, targets):
    """Datasets (``sig`` read from ``wav`` between ``start`` and ``stop`` samples when given,
    ``<target>_id`` per target) and a label encoder per target over the labels of every split,
    saved in ``save_folder``."""
    def dataset(path, sort=True):
        """A manifest as a dataset, sorted by duration unless ``sort`` is False."""
        data = sb.dataio.dataset.DynamicItemDataset.from_csv(path)
        return data.filtered_sorted(sort_key="duration") if sort else data

    train = dataset(manifests["train"], hparams["sorting"] == "ascending")
    valid, test = dataset(manifests["valid"]), dataset(manifests["test"])
    datasets = [train, valid, test]

    rate = backbone_rate(hparams["ssl"])

    @sb.utils.data_pipeline.takes("wav", "start", "stop")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav, start, stop):
        """The signal at the backbone's rate (a segment when ``start``/``stop`` are given)."""
        start, stop = int(start), int(stop)
        source = wav if stop < 0 else {"file": wav, "start": start, "stop": stop}
        return read_audio(source, rate)  # start/stop in the file's samples, then resampled

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    encoders = {}
    save = Path(hparams["save_folder"])
    save.mkdir(parents=True, exist_ok=True)
    for target in targets:
        encoder = sb.dataio.encoder.CategoricalEncoder()
        # The class inventory is the task's (every split's labels), not what training saw.
        encoder.load_or_create(save / f"label_encoder_{target}.txt",
                               from_didatasets=datasets, output_key=target)
        encoder.ignore_len()  # the class count is whatever the data has
        encoders[target] = encoder

        def encode(value, encoder=encoder):
            """A label as its class index."""
            return torch.LongTensor([encoder.encode_label(value)])

        sb.dataio.dataset.add_dynamic_item(datasets, encode, takes=target,
                                           provides=f"{target}_id")
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", *(f"{t}_id" for t in targets)])
    return train, valid, test, encoders


def build_head(hparams, encoders):
    """The task's head, sized by the backbone and the label sets; registered as the yaml's
    ``model`` (head optimizer, checkpoint, mask file)."""
    ssl = hparams["ssl"]
    # as many layers as the backbone really returns (not assumed from its config)
    head = UtteranceHead(hidden_layer_count(ssl), hidden_size(ssl),
                         {t: len(e) for t, e in encoders.items()}, hparams["projection"])
    hparams["model"] = head
    hparams["modules"]["head"] = head
    hparams["checkpointer"].add_recoverable("model", head)
    return head


def cost_report(hparams):
    """Parameters, FLOPs, CPU latency, RTF and peak memory of the deployed model (made
    deployable by the strategies: masks folded into the weights, structured pruning shrunk) on
    ``cost_seconds`` of audio, and the storage one more task costs; measured on a CPU copy,
    whatever device trained the model."""
    ssl, head = copy.deepcopy([hparams["ssl"], hparams["model"]])
    ssl, head = deployable([], ssl.cpu()), head.cpu()
    backbone = sum(p.numel() * p.element_size() for p in ssl.parameters())  # before shrinking
    ssl = deployable(hparams.get("strategies") or [], ssl)
    modules = nn.ModuleList([ssl, head]).eval()
    rate = backbone_rate(ssl)

    def forward(wav):
        """See the class docstring."""
        return head(ssl(wav))

    cost = measure_cost(forward, seconds=hparams["cost_seconds"], sample_rate=rate,
                        repeats=hparams["cost_repeats"], threads=hparams["cost_threads"])
    wav = torch.randn(1, int(hparams["cost_seconds"] * rate)) * 0.1
    return {"params_total": count_parameters(modules),
            "params_trainable": count_parameters(nn.ModuleList([hparams["ssl"], head]),
                                                 trainable_only=True),
            "flops": cost[f"flops_{hparams['cost_seconds']:g}s"],
            "latency_ms": cost[f"latency_ms_{hparams['cost_seconds']:g}s"], "rtf": cost["rtf"],
            "cost_seconds": hparams["cost_seconds"],
            "peak_memory_mb": round(peak_memory_mb(forward, wav), 1),
            "backbone_bytes": backbone,
            "storage_bytes_per_task": sum(p.numel() * p.element_size()
                                          for p in modules.parameters())}


def prepare_task(hparams, prepare_fn, synthetic_task):
    """Generate the synthetic ``synthetic_task`` when it is the data folder, then run the
    recipe's ``prepare_fn`` (on the main process); returns the manifests."""
    from speechbrain.utils.distributed import run_on_main

    from s3brain.data import superb

    default = superb.task_dir(synthetic_task, hparams["synthetic_seed"], hparams["synthetic_size"])
    if Path(hparams["data_folder"]).resolve() == default.resolve():
        run_on_main(superb.generate_superb, kwargs={
            "seed": hparams["synthetic_seed"], "size": hparams["synthetic_size"]})
    kwargs = {"data_folder": hparams["data_folder"], "save_folder": hparams["output_folder"],
              "skip_prep": hparams["skip_prep"]}
    run_on_main(prepare_fn, kwargs=kwargs)
    return prepare_fn(**{**kwargs, "skip_prep": True})


def run_task(argv, recipe_dir, brain_class, prepare_fn, synthetic_task):
    """A SUPERB-style task end to end: ``prepare_fn(data_folder, save_folder, skip_prep)``
    writes the train/valid/test manifests from the real layout; ``synthetic_task`` names the
    embedded default's folder (``s3brain.data.superb``). Returns the process exit code."""
    import sys

    try:
        hparams, run_opts = start_experiment(argv, recipe_dir, Path(recipe_dir) / "train.py")
        manifests = prepare_task(hparams, prepare_fn, synthetic_task)
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    targets = brain_class.targets
    train, valid, test, encoders = dataio_prepare(hparams, manifests, targets)
    build_head(hparams, encoders)
    setup_strategy(hparams)
    brain = fit(brain_class, hparams, run_opts, train, valid, encoders)
    brain.evaluate(test, min_key="error", test_loader_kwargs=hparams["test_dataloader_opts"])
    results = {"strategy": hparams["strategy"], "task": hparams["task"],
               "ssl_hub": str(hparams["ssl_hub"]), "ssl_init": hparams["ssl"].ssl_init,
               "sparsity": run_sparsity(hparams.get("strategies") or []),
               "train_seconds": round(hparams["run_state"].elapsed(), 1),
               **{f"test_{k}": round(v, 2) for k, v in brain.test_stats.items() if k != "error"}}
    if not if_main_process():
        return 0
    results.update(cost_report(hparams))
    # One more task on a shared frozen backbone: its payload (S3-Router: mask bits and head).
    payload = task_payload(hparams.get("strategies") or [], Path(hparams["output_folder"]),
                           hparams["ssl"], hparams["model"], {"task": hparams["task"]})
    if payload is not None:
        results["storage_bytes_per_task"] = payload
    results["storage_share_of_backbone"] = round(
        results["storage_bytes_per_task"] / results["backbone_bytes"], 4)
    update_results(Path(hparams["output_folder"]) / "results.json", **results)
    shown = ", ".join(f"{k[5:]} {v:.2f}" for k, v in results.items()
                      if k.startswith("test_") and k != "test_loss")
    print(f"{hparams['task']} {hparams['strategy']} (sparsity {results['sparsity']}): {shown}\n"
          f"  params {results['params_total']:,} (trainable {results['params_trainable']:,}) | "
          f"{results['flops'] / 1e9:.2f} GFLOPs / {hparams['cost_seconds']:g} s | "
          f"{results['latency_ms']:.0f} ms | storage per task "
          f"{results['storage_bytes_per_task']:,} bytes "
          f"({results['storage_share_of_backbone']:.1%} of the backbone)")
    return 0
