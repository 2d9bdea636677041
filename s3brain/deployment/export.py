"""A finished CTC run as a SpeechBrain inference folder: ``hyperparams.yaml`` and the files it
loads, so that ``speechbrain.inference.ASR.EncoderASR`` transcribes with the deployed model.

``export_inference(run_folder)`` reads the run's ``hyperparams.yaml``, sets its strategies up on
the backbone, loads the checkpoint the recipe tested (lowest dev WER or PER) and writes
``<run_folder>/inference/``:

- ``hyperparams.yaml``: the ``encoder`` (``CTCEncoder``: the deployed backbone, built from its
  transformers config, masks folded, SAFARI's pruned units removed, LoRA merged, Houlsby
  adapters kept; then the head and the CTC layer; input downsampling, token dropping with its
  detector, or early exit with its heads and threshold, as the run had them), the
  ``tokenizer`` (``CTCLabels``), greedy CTC as ``decoding_function``, an ``audio_normalizer``
  that reads any rate and channel count as the recipes do (``s3brain.backbone.audio``), and the
  ``pretrainer`` that loads the two files below;
- ``encoder.ckpt``: the encoder's ``state_dict``; ``tokenizer.ckpt``: the labels.

Use::

    from speechbrain.inference.ASR import EncoderASR
    asr = EncoderASR.from_hparams(source="results/weight_ft/1986/inference", savedir="asr")
    asr.transcribe_file("speech.wav")

or ``python -m s3brain.inference <run folder>`` to export from the command line.
``S3RouterASR`` serves several S3-Router tasks (mask files) on one backbone.

A SUPERB run (``recipes/SUPERB/<task>``) is exported by ``export_classifier`` (the same command
line): the deployed backbone returning every hidden layer and the run's ``UtteranceHead``
(``classifier.ckpt``), a label encoder per target, served by ``UtteranceClassifier`` through
``foreign_class(source, pymodule_file="custom.py", classname="UtteranceClassifier")``;
``classify_file("speech.wav")`` gives ``{target: label}``.

Example
-------
>>> labels = CTCLabels(separator=" ")
>>> labels.insert_blank(index=0)
>>> labels.update_from_iterable(["a", "b"], sequence_input=False)
>>> labels.decode_ndim([1, 2, 7])
['a b']
"""

import argparse
import copy
import json
import logging
import re
import sys
from pathlib import Path

import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.encoder import CategoricalEncoder
from torch import nn

from s3brain.backbone.audio import backbone_rate
from s3brain.deployment.model import Deployment
from s3brain.deployment.modules import (
    CLASSIFIER_FILE,
    ENCODER_FILE,
    TOKENIZER_FILE,
    Backbone,
    CTCLabels,
)
from s3brain.lobes.heads import UtteranceHead
from s3brain.strategies.base import ExportError, strategy_modules
from s3brain.strategies.s3router.mask_bank import TASK_FILE, read_mask_file, remove_masks
from s3brain.utils.checkpoint import Checkpointer

logger = logging.getLogger(__name__)


def _yaml_block(data, indent):
    """Plain data as an indented yaml block."""
    lines = []
    for key, value in data.items():  # key by key: a list of numbers or words on one line
        if isinstance(value, (list, tuple)) and not any(isinstance(v, (list, dict))
                                                        for v in value):
            lines.append(f"{key}: {json.dumps(list(value))}")
        else:
            lines += yaml.safe_dump({key: value}, default_flow_style=False,
                                    sort_keys=False).splitlines()
    return "".join(" " * indent + line + "\n" for line in lines)


def _layer_yaml(module, indent):
    """``!new:`` yaml lines that build ``module`` (a head's layers), or ExportError."""
    pad = " " * indent
    name = f"{type(module).__module__}.{type(module).__qualname__}"
    if getattr(nn, type(module).__name__, None) is type(module):
        name = f"torch.nn.{type(module).__name__}"
    simple = {nn.LeakyReLU: lambda m: {"negative_slope": m.negative_slope},
              nn.ReLU: lambda m: {}, nn.GELU: lambda m: {"approximate": m.approximate},
              nn.Tanh: lambda m: {}, nn.Identity: lambda m: {},
              nn.Dropout: lambda m: {"p": m.p},
              nn.Linear: lambda m: {"in_features": m.in_features,
                                    "out_features": m.out_features,
                                    "bias": m.bias is not None},
              nn.LayerNorm: lambda m: {"normalized_shape": list(m.normalized_shape),
                                       "eps": m.eps,
                                       "elementwise_affine": m.elementwise_affine}}
    if type(module) in simple:
        args = simple[type(module)](module)
        return f"!new:{name}\n" + (_yaml_block(args, indent) if args else "")
    if isinstance(module, sb.nnet.linear.Linear) and not module.combine_dims \
            and module.max_norm is None:
        args = {"input_size": module.w.in_features, "n_neurons": module.w.out_features,
                "bias": module.w.bias is not None}
        return f"!new:{name}\n" + _yaml_block(args, indent)
    if isinstance(module, sb.nnet.containers.Sequential):
        lines = f"!new:{name}\n{pad}input_shape: [null, null, null]\n"
        for child_name, child in module.items():
            lines += f"{pad}{child_name}: {_layer_yaml(child, indent + 4)}"
        return lines
    if type(module) is nn.Sequential:
        lines = f"!new:{name}\n"
        for child in module:
            lines += f"{pad}- {_layer_yaml(child, indent + 4)}"
        return lines
    raise ExportError(f"cannot describe a {name} head layer in hyperparams.yaml: the export "
                      f"knows SpeechBrain's Linear and Sequential and torch's Linear, "
                      f"Sequential, LayerNorm, Dropout and activations")


def _value_yaml(key, value, indent):
    """One ``key: value`` of a module's arguments as yaml lines at ``indent``."""
    if isinstance(value, nn.Module):
        return f"{' ' * indent}{key}: {_module_yaml(value, indent + 4)}"
    return _yaml_block({key: value}, indent)


def _module_yaml(module, indent):
    """``!new:`` yaml lines that build ``module``: from its ``export_args`` (the deployed
    modules, the strategies' parts and the mechanisms they hold), else a head layer
    (``_layer_yaml``). Arguments that are None are left to the constructor's default."""
    if not hasattr(module, "export_args"):
        return _layer_yaml(module, indent)
    text = f"!new:{type(module).__module__}.{type(module).__qualname__}\n"
    for key, value in module.export_args().items():
        if value is not None:
            text += _value_yaml(key, value, indent)
    return text


def _fix_relative_output(text, run_folder):
    """The run's yaml text with its output folder made absolute (``run_folder``) when the run
    wrote it relative to the folder it was started in."""
    for line in text.splitlines():
        if line.startswith("output_folder:"):
            old = line.split(":", 1)[1].split("#")[0].strip()
            if old and not Path(old).is_absolute():
                return text.replace(f": {old}", f": {run_folder}")
            break
    return text


def _load_hparams(run_folder):
    """The run's hyperparameters (its yaml, the output folder made absolute), or ExportError."""
    yaml_file = run_folder / "hyperparams.yaml"
    if not yaml_file.is_file():
        raise ExportError(f"{run_folder}: no hyperparams.yaml: not a run's output folder")
    return load_hyperpyyaml(_fix_relative_output(yaml_file.read_text(encoding="utf-8"),
                                                 run_folder))


def _labels(hparams, run_folder):
    """The run's CTC labels (``CTCLabels``) and units: CommonVoice's saved phoneme set, or
    LibriSpeech's alphabet."""
    saved = Path(run_folder) / "save" / "label_encoder.txt"
    if saved.is_file():
        labels = CTCLabels(separator=" ")
        labels.load(saved)
        return labels, "phonemes"
    if "alphabet" not in hparams:
        raise ExportError(f"{run_folder}: neither save/label_encoder.txt nor an alphabet: not "
                          f"a LibriSpeech or CommonVoice CTC run")
    labels = CTCLabels()
    labels.insert_blank(index=hparams["blank_index"])
    labels.update_from_iterable(list(hparams["alphabet"]), sequence_input=False)
    return labels, "chars"


def _rebuild(hparams, head, strategies, run_folder, key):
    """Set the strategies up on the run's backbone (but those only training uses), load the
    checkpoint the recipe tested (lowest ``key``) and put the model as at the test pass."""
    ssl = hparams["ssl"]
    for strategy in strategies:
        if not strategy.trains_only:
            strategy.setup(ssl, hparams)
    modules = {"ssl": ssl, "model": head, **strategy_modules(strategies)}
    checkpointer = Checkpointer(run_folder / "save", recoverables=modules)
    if checkpointer.find_checkpoint(min_key=key) is None:
        raise ExportError(f"{run_folder}: no checkpoint in save/: the run has not finished")
    checkpointer.recover_if_possible(min_key=key)
    for strategy in strategies:
        strategy.before_eval(ssl)  # as at the start of the recipe's test pass


def load_run(run_folder):
    """A finished CTC run as the recipe tested it: its hyperparameters, strategies set up on
    the backbone, the checkpoint with the lowest dev error loaded, its labels, and its
    ``Deployment``, built as the recipe builds the one it measures.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder (``hyperparams.yaml``, ``save/``).

    Returns
    -------
    dict
        ``hparams`` (the run's, modules loaded), ``strategies``, ``labels`` (``CTCLabels``),
        ``units`` (``chars`` or ``phonemes``), ``key`` (``WER`` or ``PER``), ``folder``,
        ``deployment``.

    Raises
    ------
    ExportError
        The folder is not a finished CTC run.
    """
    run_folder = Path(run_folder).resolve()
    hparams = _load_hparams(run_folder)
    if "ctc_lin" not in hparams.get("modules", {}):
        raise ExportError(f"{run_folder}: not a CTC run (no ctc_lin module); only LibriSpeech "
                          f"and CommonVoice runs are exported")
    strategies = list(hparams.get("strategies") or [])
    labels, units = _labels(hparams, run_folder)
    key = "PER" if units == "phonemes" else "WER"
    _rebuild(hparams, hparams["model"], strategies, run_folder, key)
    modules = hparams["modules"]
    deployment = Deployment(hparams["ssl"], nn.Sequential(modules["head"], modules["ctc_lin"]),
                            strategies, extra=list(strategy_modules(strategies).values()))
    return {"hparams": hparams, "strategies": strategies, "labels": labels, "units": units,
            "key": key, "folder": run_folder, "deployment": deployment}


def write_ctc_folder(deployment, hparams, run_folder, target=None):
    """Write the inference folder of a CTC run's ``Deployment`` (``EncoderASR`` loads it).

    Arguments
    ---------
    deployment : s3brain.deployment.model.Deployment
        The run's deployed model.
    hparams : dict
        The run's hyperparameters (``blank_index``, ``alphabet`` or the saved labels,
        ``strategy``).
    run_folder : str or Path
        The run's output folder.
    target : str or Path, optional
        Where to write; default ``<run_folder>/inference``.

    Returns
    -------
    pathlib.Path
        The folder written.
    """
    run_folder = Path(run_folder).resolve()
    target = Path(target) if target is not None else run_folder / "inference"
    labels, units = _labels(hparams, run_folder)
    encoder = deployment.ctc_model(hparams["blank_index"])
    text = (
        f"# The deployed model of an s3brain run (strategy {hparams.get('strategy', '?')}, "
        f"{units}), written by s3brain.deployment.export:\n"
        f"#   from speechbrain.inference.ASR import EncoderASR\n"
        f"#   asr = EncoderASR.from_hparams(source=<this folder>, savedir=\"asr\")\n"
        f"#   asr.transcribe_file(\"speech.wav\")\n\n"
        f"sample_rate: {deployment.rate}\nblank_index: {hparams['blank_index']}\n"
        f"units: {units}\n\n"
        f"encoder: {_module_yaml(encoder, 4)}\n"
        f"tokenizer: !new:s3brain.deployment.modules.CTCLabels\n"
        f"    separator: {labels.separator!r}\n\n"
        f"decoding_function: !name:speechbrain.decoders.ctc_greedy_decode\n"
        f"    blank_id: !ref <blank_index>\n\n"
        f"# any rate and channel count, read as the recipe reads audio\n"
        f"audio_normalizer: !new:s3brain.deployment.modules.AudioNormalizer\n"
        f"    sample_rate: !ref <sample_rate>\n\n"
        f"modules:\n    encoder: !ref <encoder>\n\n"
        f"pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
        f"    loadables:\n        encoder: !ref <encoder>\n        tokenizer: !ref <tokenizer>\n")
    target.mkdir(parents=True, exist_ok=True)
    torch.save(encoder.state_dict(), target / ENCODER_FILE)
    labels.save(target / TOKENIZER_FILE)
    (target / "hyperparams.yaml").write_text(text, encoding="utf-8")
    logger.info("Inference folder written: %s", target)
    return target


def export_inference(run_folder, target=None):
    """Write the inference folder of a finished LibriSpeech or CommonVoice run, which
    ``EncoderASR.from_hparams(source=<folder>)`` loads: ``load_run``, then
    ``write_ctc_folder`` of its deployment.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder.
    target : str or Path, optional
        Where to write; default ``<run_folder>/inference``.

    Returns
    -------
    pathlib.Path
        The folder written.

    Raises
    ------
    ExportError
        The run cannot be exported (one line says why).

    Example
    -------
    >>> export_inference("/nowhere")
    Traceback (most recent call last):
    ...
    s3brain.strategies.base.ExportError: /nowhere: no hyperparams.yaml: not a run's output folder
    """
    run = load_run(run_folder)
    return write_ctc_folder(run["deployment"], run["hparams"], run["folder"], target)


def export_after_run(run_folder, deployment=None, hparams=None):
    """What a recipe calls at the end of a run: the inference folder of the deployment it
    measured (``write_ctc_folder`` or ``write_classifier_folder``; from the run folder with
    ``export_run`` when no deployment is given), or a logged line saying why this run has
    none; the run's results are never lost to it.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder.
    deployment : s3brain.deployment.model.Deployment, optional
        The run's deployed model (the recipe's, whose cost it measured).
    hparams : dict, optional
        The run's hyperparameters (with ``deployment``).

    Returns
    -------
    pathlib.Path or None
        The folder written, or None.

    Example
    -------
    >>> export_after_run("/nowhere") is None
    True
    """
    try:
        if deployment is None:
            return export_run(run_folder)
        if deployment.all_layers:
            return write_classifier_folder(deployment, hparams, run_folder)
        return write_ctc_folder(deployment, hparams, run_folder)
    except ExportError as err:
        logger.warning("No inference folder: %s", err)
        return None


def is_classifier_run(run_folder):
    """Whether a run folder is a SUPERB run (a label encoder per target,
    ``save/label_encoder_<target>.txt``), exported by ``export_classifier``.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder.

    Returns
    -------
    bool

    Example
    -------
    >>> is_classifier_run("/nowhere")
    False
    """
    return any((Path(run_folder) / "save").glob("label_encoder_*.txt"))


def _label_encoders(run_folder, classes):
    """The run's label encoder of each target (``save/label_encoder_<target>.txt``)."""
    encoders = {}
    for target, count in classes.items():
        encoders[target] = CategoricalEncoder()
        encoders[target].load(Path(run_folder) / "save" / f"label_encoder_{target}.txt")
        encoders[target].expect_len(count)
    return encoders


def load_classifier_run(run_folder):
    """A finished SUPERB run as the recipe tested it: its hyperparameters, the head rebuilt
    from the best checkpoint (lowest dev ``error``, 100 - accuracy, as the recipe's
    ``evaluate(min_key="error")``), strategies set up on the backbone, the weights loaded, the
    label encoders, and its ``Deployment``.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder (``hyperparams.yaml``, ``save/``).

    Returns
    -------
    dict
        ``hparams`` (``model`` and ``modules["head"]`` the loaded head), ``strategies``,
        ``head`` (``s3brain.lobes.heads.UtteranceHead``), ``targets`` (in the recipe's order),
        ``encoders`` (``{target: CategoricalEncoder}``), ``folder``, ``deployment``.

    Raises
    ------
    ExportError
        The folder is not a finished SUPERB run.
    """
    run_folder = Path(run_folder).resolve()
    hparams = _load_hparams(run_folder)
    if not is_classifier_run(run_folder):
        raise ExportError(f"{run_folder}: no save/label_encoder_<target>.txt: not a SUPERB run")
    best = Checkpointer(run_folder / "save").find_checkpoint(min_key="error")
    if best is None or "model" not in best.paramfiles:
        raise ExportError(f"{run_folder}: no checkpoint with a head in save/: the run has not "
                          f"finished")
    # the head as the recipe built it (build_head), sized by the checkpoint's tensors
    state = torch.load(best.paramfiles["model"], map_location="cpu", weights_only=True)
    head = UtteranceHead.sized_by(state)
    classes = head.export_args()["classes"]
    targets = list(classes)
    hparams["model"] = hparams["modules"]["head"] = head
    strategies = list(hparams.get("strategies") or [])
    _rebuild(hparams, head, strategies, run_folder, "error")
    deployment = Deployment(hparams["ssl"], head, strategies, all_layers=True,
                            extra=list(strategy_modules(strategies).values()))
    return {"hparams": hparams, "strategies": strategies, "head": head, "targets": targets,
            "encoders": _label_encoders(run_folder, classes), "folder": run_folder,
            "deployment": deployment}


def write_classifier_folder(deployment, hparams, run_folder, target=None):
    """Write the inference folder of a SUPERB run's ``Deployment``, which
    ``foreign_class(source, pymodule_file="custom.py", classname="UtteranceClassifier")``
    loads.

    Arguments
    ---------
    deployment : s3brain.deployment.model.Deployment
        The run's deployed model (its head an ``UtteranceHead``).
    hparams : dict
        The run's hyperparameters (``task``, ``strategy``).
    run_folder : str or Path
        The run's output folder (its ``save/label_encoder_<target>.txt``).
    target : str or Path, optional
        Where to write; default ``<run_folder>/inference``.

    Returns
    -------
    pathlib.Path
        The folder written.
    """
    run_folder = Path(run_folder).resolve()
    target = Path(target) if target is not None else run_folder / "inference"
    model = deployment.utterance_model()
    classes = model.head.export_args()["classes"]
    targets = list(classes)
    encoders = _label_encoders(run_folder, classes)
    text = (
        f"# The deployed model of an s3brain SUPERB run (task {hparams.get('task', '?')}, "
        f"strategy {hparams.get('strategy', '?')}), written by s3brain.deployment.export:\n"
        f"#   from speechbrain.inference.interfaces import foreign_class\n"
        f"#   classifier = foreign_class(source=<this folder>, pymodule_file=\"custom.py\",\n"
        f"#       classname=\"UtteranceClassifier\", savedir=\"classifier\")\n"
        f"#   classifier.classify_file(\"speech.wav\")\n\n"
        f"sample_rate: {deployment.rate}\n\n"
        f"classifier: {_module_yaml(model, 4)}\n"
        + "".join(f"label_encoder_{t}: !new:speechbrain.dataio.encoder.CategoricalEncoder\n"
                  for t in targets)
        + "label_encoders:\n"
        + "".join(f"    {t}: !ref <label_encoder_{t}>\n" for t in targets)
        + "\n# any rate and channel count, read as the recipe reads audio\n"
          "audio_normalizer: !new:s3brain.deployment.modules.AudioNormalizer\n"
          "    sample_rate: !ref <sample_rate>\n\n"
          "modules:\n    classifier: !ref <classifier>\n\n"
          "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
          "    loadables:\n        classifier: !ref <classifier>\n"
        + "".join(f"        label_encoder_{t}: !ref <label_encoder_{t}>\n" for t in targets))
    target.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), target / CLASSIFIER_FILE)
    for t in targets:
        encoders[t].save(target / f"label_encoder_{t}.ckpt")
    (target / "custom.py").write_text(
        '"""The interface of this inference folder, for speechbrain.inference.interfaces.'
        'foreign_class (pymodule_file="custom.py", classname="UtteranceClassifier")."""\n\n'
        "from s3brain.inference import UtteranceClassifier  # noqa: F401\n", encoding="utf-8")
    (target / "hyperparams.yaml").write_text(text, encoding="utf-8")
    logger.info("Inference folder written: %s", target)
    return target


def export_classifier(run_folder, target=None):
    """Write the inference folder of a finished SUPERB run (``load_classifier_run``, then
    ``write_classifier_folder`` of its deployment).

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder.
    target : str or Path, optional
        Where to write; default ``<run_folder>/inference``.

    Returns
    -------
    pathlib.Path
        The folder written.

    Raises
    ------
    ExportError
        The run cannot be exported (one line says why).

    Example
    -------
    >>> export_classifier("/nowhere")
    Traceback (most recent call last):
    ...
    s3brain.strategies.base.ExportError: /nowhere: no hyperparams.yaml: not a run's output folder
    """
    run = load_classifier_run(run_folder)
    return write_classifier_folder(run["deployment"], run["hparams"], run["folder"], target)


def export_run(run_folder, target=None):
    """Write a finished run's inference folder: ``export_classifier`` for a SUPERB run,
    ``export_inference`` for a LibriSpeech or CommonVoice CTC run.

    Arguments
    ---------
    run_folder : str or Path
        The run's output folder.
    target : str or Path, optional
        Where to write; default ``<run_folder>/inference``.

    Returns
    -------
    pathlib.Path
        The folder written.

    Example
    -------
    >>> export_run("/nowhere")
    Traceback (most recent call last):
    ...
    s3brain.strategies.base.ExportError: /nowhere: no hyperparams.yaml: not a run's output folder
    """
    if is_classifier_run(run_folder):
        return export_classifier(run_folder, target)
    return export_inference(run_folder, target)


#: What a mask bank's task name may hold: it names the bank's files and yaml keys.
TASK_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _task_name(hparams, detailed=False):
    """A task's name from its run's hyperparameters: what the task is (the SUPERB task, the
    CommonVoice language, else ``librispeech``), with ``detailed`` then the run's strategy and
    seed; characters a name may not hold (``TASK_NAME``) become ``_``."""
    parts = [hparams.get("task") or hparams.get("language") or "librispeech"]
    if detailed:
        parts += [hparams.get("strategy"), hparams.get("seed")]
    return "_".join(re.sub(r"[^A-Za-z0-9_-]", "_", str(p)) for p in parts if p is not None)


def _bank_names(runs, names):
    """The tasks' names: ``names`` (checked), else what each task is (``_task_name``), with
    its strategy and seed where two runs are of the same task; ExportError when two runs
    would still get one name."""
    folders, given = [run["folder"] for run in runs], names is not None
    if given:
        names = [str(n) for n in names]
        if len(names) != len(runs):
            raise ExportError(f"{len(names)} names for {len(runs)} runs")
        bad = [n for n in names if not TASK_NAME.fullmatch(n)]
        if bad:
            raise ExportError(f"task name {bad[0]!r}: letters, digits, '_' and '-' only (it "
                              f"names the bank's files and yaml keys)")
    else:
        short = [_task_name(run["hparams"]) for run in runs]
        names = [n if short.count(n) == 1 else _task_name(run["hparams"], detailed=True)
                 for n, run in zip(short, runs)]
    for i, name in enumerate(names):
        if name in names[:i]:
            why = ("" if given else " (the same task, strategy and seed): name the tasks "
                   "with --names")
            raise ExportError(f"{folders[names.index(name)]} and {folders[i]} would both be "
                              f"task {name!r}{why}")
    keys = [key for run, name in zip(runs, names) for key in _bank_keys(run, name).values()]
    if len(set(keys)) < len(keys):
        raise ExportError(f"the task names {names} give two tasks one file: name them apart "
                          f"with --names")
    return names


def _bank_keys(run, name):
    """The yaml keys (and file names) of one task in a mask bank: its head, its mask file, and
    its labels (a SUPERB run's label encoder per target, or the CTC labels)."""
    labels = ({t: f"labels_{name}_{t}" for t in run["encoders"]} if "encoders" in run
              else {None: f"labels_{name}"})
    return {"head": f"head_{name}", "mask": f"task_{name}", **labels}


def _bank_task(run, name, target):
    """Write one run's files into a mask bank (its mask file, its labels) and give its yaml:
    its head, mask file and labels, and its entry under ``tasks``."""
    keys = _bank_keys(run, name)
    head_key, mask_key = keys.pop("head"), keys.pop("mask")
    (target / f"{mask_key}.ckpt").write_bytes((run["folder"] / TASK_FILE).read_bytes())
    if "encoders" in run:  # a SUPERB run: its head reads every hidden layer
        head = _module_yaml(run["head"], 4)
        for t, key in keys.items():
            run["encoders"][t].save(target / f"{key}.ckpt")
        labels = "".join(f"{key}: !new:speechbrain.dataio.encoder.CategoricalEncoder\n"
                         for key in keys.values())
        entry = "        labels:\n" + "".join(f"            {json.dumps(t)}: !ref <{key}>\n"
                                            for t, key in keys.items())
    else:  # a CTC run: its head and CTC layer read the last block
        modules = run["hparams"]["modules"]
        head = ("!new:s3brain.deployment.modules.TaskHead\n"
                f"    head: {_layer_yaml(modules['head'], 8)}"
                f"    ctc_lin: {_layer_yaml(modules['ctc_lin'], 8)}")
        run["labels"].save(target / f"{keys[None]}.ckpt")
        labels = (f"{keys[None]}: !new:s3brain.deployment.modules.CTCLabels\n"
                  f"    separator: {run['labels'].separator!r}\n")
        entry = f"        labels: !ref <{keys[None]}>\n"
    return {"yaml": f"{head_key}: {head}{mask_key}: !new:s3brain.deployment.modules.TaskFile\n"
                    + labels,
            "entry": f"    {json.dumps(name)}:\n        mask: !ref <{mask_key}>\n"
                     f"        head: !ref <{head_key}>\n" + entry,
            "loadables": [mask_key, *keys.values()]}


def export_mask_bank(run_folders, target, names=None):
    """Write a mask bank folder serving the S3-Router runs ``run_folders`` (same backbone):
    the dense pretrained backbone once, each run's mask file, head and labels, and the
    ``custom.py`` through which ``foreign_class`` loads ``S3RouterASR`` (CTC runs: LibriSpeech,
    CommonVoice) or ``S3RouterClassifier`` (which serves SUPERB runs too, and a bank mixing
    both kinds: each task's head gets what it reads, every hidden layer for a SUPERB head, the
    last block's features for a CTC one).

    Arguments
    ---------
    run_folders : list of str or Path
        Finished S3-Router runs (``hparams/s3router.yaml`` of LibriSpeech, CommonVoice or a
        SUPERB task).
    target : str or Path
        The folder to write.
    names : list of str, optional
        The tasks' names (letters, digits, ``_`` and ``-``). Default: what each task is, the
        SUPERB task (``keyword_spotting``), the CommonVoice language (``en``) or
        ``librispeech``, followed by the run's strategy and seed where two runs are of the
        same task (``keyword_spotting_s3router_1986``).

    Returns
    -------
    pathlib.Path
        ``target``.

    Raises
    ------
    ExportError
        A run without S3-Router masks, one learned on another backbone, or two runs that
        would get the same name.

    Example
    -------
    >>> export_mask_bank(["/nowhere"], "/tmp/bank")
    Traceback (most recent call last):
    ...
    s3brain.strategies.base.ExportError: /nowhere: no hyperparams.yaml: not a run's output folder
    """
    runs, fingerprint = [], None
    for folder in run_folders:
        run = load_classifier_run(folder) if is_classifier_run(folder) else load_run(folder)
        mask_file = run["folder"] / TASK_FILE
        if not all(s.keeps_backbone_weights for s in run["strategies"]) or not mask_file.is_file():
            raise ExportError(f"{folder}: no {TASK_FILE} over the frozen backbone: a mask bank "
                              f"serves finished S3-Router runs only")
        meta = read_mask_file(mask_file)[2]
        if fingerprint not in (None, meta["backbone_fingerprint"]):
            raise ExportError(f"{folder}: its masks were learned on another backbone than "
                              f"{run_folders[0]}'s")
        fingerprint = meta["backbone_fingerprint"]
        runs.append(run)
    names = _bank_names(runs, names)
    ctc = [run for run in runs if "encoders" not in run]
    blanks = sorted({run["hparams"]["blank_index"] for run in ctc})
    if len(blanks) > 1:
        raise ExportError(f"the CTC runs have different blank indices {blanks}: a bank decodes "
                          f"with one")
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    ssl = runs[0]["hparams"]["ssl"]
    backbone = Backbone.of(remove_masks(copy.deepcopy(ssl).cpu()), sample_rate=backbone_rate(ssl))
    torch.save(backbone.state_dict(), target / "backbone.ckpt")
    tasks = [_bank_task(run, name, target) for run, name in zip(runs, names)]
    classname = "S3RouterClassifier" if len(ctc) < len(runs) else "S3RouterASR"
    (target / "custom.py").write_text(
        '"""The interfaces of this mask bank, for speechbrain.inference.interfaces.foreign_class '
        '(pymodule_file="custom.py", classname="S3RouterASR" for its CTC tasks, '
        '"S3RouterClassifier" for its SUPERB tasks and its CTC ones)."""\n\n'
        "from s3brain.inference.interfaces import S3RouterASR, S3RouterClassifier  # noqa: F401\n",
        encoding="utf-8")
    first = {kind: next((n for r, n in zip(runs, names) if ("encoders" in r) == kind), None)
             for kind in (False, True)}
    use = "".join(f"#   bank.{verb}_file(\"speech.wav\", task=\"{first[kind]}\")\n"
                  for kind, verb in ((False, "transcribe"), (True, "classify")) if first[kind])
    ctc_yaml = ("decoding_function: !name:speechbrain.decoders.ctc_greedy_decode\n"
                "    blank_id: !ref <blank_index>\n\n") if ctc else ""
    text = (
        "# A mask bank written by s3brain.deployment.export.export_mask_bank: one backbone, one mask\n"
        "# file and head per task.\n"
        "#   from speechbrain.inference.interfaces import foreign_class\n"
        f"#   bank = foreign_class(source=\"{target}\", pymodule_file=\"custom.py\",\n"
        f"#                        classname=\"{classname}\", savedir=\"bank\")\n"
        f"{use}\n"
        f"sample_rate: {backbone.sampling_rate}\n"
        + (f"blank_index: {blanks[0]}\n" if ctc else "")
        + f"\nbackbone: {_module_yaml(backbone, 4)}\n"
        + "".join(task["yaml"] for task in tasks)
        + "\ntasks:\n" + "".join(task["entry"] for task in tasks)
        + f"\n{ctc_yaml}"
          "audio_normalizer: !new:s3brain.deployment.modules.AudioNormalizer\n"
          "    sample_rate: !ref <sample_rate>\n\n"
          "modules:\n    backbone: !ref <backbone>\n\n"
          "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
          "    loadables:\n        backbone: !ref <backbone>\n"
        + "".join(f"        {key}: !ref <{key}>\n" for task in tasks for key in task["loadables"]))
    (target / "hyperparams.yaml").write_text(text, encoding="utf-8")
    logger.info("Mask bank written: %s (tasks %s)", target, ", ".join(names))
    return target


def main(argv=None):
    """``python -m s3brain.inference <run folder> [--target DIR]``: export one run's inference
    folder; ``python -m s3brain.inference --mask-bank DIR <S3-Router run>... [--names A,B]``: a
    mask bank (LibriSpeech, CommonVoice and SUPERB runs). Prints the folder written.

    Arguments
    ---------
    argv : list of str, optional
        The command line after the program name.

    Returns
    -------
    int
        The exit status (2: the run cannot be exported, said in one line).
    """
    parser = argparse.ArgumentParser(
        prog="python -m s3brain.inference",
        description="Write the SpeechBrain inference folder of a finished run (EncoderASR; "
                    "UtteranceClassifier for a SUPERB run), or the mask bank (S3RouterASR; "
                    "S3RouterClassifier with SUPERB runs) of several S3-Router runs.")
    parser.add_argument("run_folders", nargs="+", help="the run's output folder")
    parser.add_argument("--target", default=None, help="default: <run_folder>/inference")
    parser.add_argument("--mask-bank", default=None, metavar="DIR",
                        help="write one mask bank serving every run given, in DIR")
    # one value (comma-separated, or --names repeated), so it cannot swallow the run folders
    parser.add_argument("--names", action="extend", type=lambda text: text.split(","),
                        default=None, metavar="A,B,...",
                        help="the mask bank's task names, in the runs' order (default: each "
                             "run's task or language, then strategy and seed where needed)")
    args = parser.parse_intermixed_args(argv)  # options anywhere
    try:
        if args.mask_bank:
            print(export_mask_bank(args.run_folders, args.mask_bank, args.names))
        elif len(args.run_folders) > 1:
            raise ExportError("one run at a time (or --mask-bank DIR for several S3-Router runs)")
        else:
            print(export_run(args.run_folders[0], args.target))
    except (ExportError, FileNotFoundError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
