"""Per-task (per-language) S3-Router masks on one shared, frozen backbone.

A task is stored as one small safetensors file: its masks bit-packed (1 bit per masked weight)
and its head's weights, with metadata naming the layers, their shapes, a fingerprint of the
backbone weights the masks were learned on and a checksum of the payload. ``MaskBank`` gives
them the verbs PEFT users know: ``load_adapter(path, adapter_name, head=None)``,
``set_adapter(name)``, ``active_adapter`` and ``merge_and_unload()``.

Example
-------
>>> import tempfile, torch
>>> from transformers import Wav2Vec2Config, Wav2Vec2Model
>>> from s3brain.strategies.s3router.masks import add_masks, binary_masks
>>> config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
...     intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
...     num_feat_extract_layers=2)
>>> torch.manual_seed(0) and None
>>> task_model = Wav2Vec2Model(config)
>>> backbone = Wav2Vec2Model(config)
>>> _ = backbone.load_state_dict(task_model.state_dict())
>>> _ = add_masks(task_model, sparsity=0.1)
>>> with tempfile.TemporaryDirectory() as tmp:
...     size = save_mask(f"{tmp}/en.safetensors", task_model, head=torch.nn.Linear(32, 5))
...     bank = MaskBank(backbone)
...     head = bank.load_adapter(f"{tmp}/en.safetensors", "en", head=torch.nn.Linear(32, 5))
>>> bank.set_adapter("en") is head, bank.active_adapter
(True, 'en')
>>> all(torch.equal(a, b) for a, b in zip(binary_masks(backbone).values(),
...                                       binary_masks(task_model).values()))
True
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.nn.utils import parametrize

from s3brain.backbone.families import hf_model
from s3brain.strategies.s3router.masks import FixedMask, binary_masks, fold, masked_linears
from s3brain.utils.parametrize import remove_parametrization

FORMAT = "s3brain-mask-bank/1"
#: The task file an S3-Router run writes beside its results.
TASK_FILE = "task_mask.safetensors"


class MaskBankError(ValueError):
    """A mask file that does not fit the backbone, or is damaged."""


def pack_mask(mask):
    """Bool tensor -> uint8 tensor with 8 mask values per byte."""
    return torch.from_numpy(np.packbits(mask.reshape(-1).cpu().numpy().astype(np.uint8)))


def unpack_mask(packed, shape):
    """Inverse of ``pack_mask``."""
    numel = int(np.prod(shape))
    bits = np.unpackbits(packed.numpy(), count=numel)
    return torch.from_numpy(bits.astype(bool)).view(*shape)


def _frozen_weight(linear):
    """The weight a mask multiplies: the parametrization's original, or the plain weight."""
    if parametrize.is_parametrized(linear, "weight"):
        return linear.parametrizations.weight.original
    return linear.weight


def backbone_fingerprint(model, names):
    """sha256 of the names, shapes and bytes of the weights under the masks."""
    modules = dict(hf_model(model).named_modules())
    digest = hashlib.sha256()
    for name in names:
        weight = _frozen_weight(modules[name]).detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(weight.shape)}".encode())
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()


def _payload_digest(tensors):
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_mask(path, model, head=None, **info):
    """Save the masks of ``model`` (and ``head``'s weights) as one task file.

    Arguments
    ---------
    path : str or Path
        The ``.safetensors`` file to write (its folder is made if missing).
    model : transformers model or SpeechBrain wrapper
        A backbone carrying masks (``s3brain.strategies.s3router.masks.add_masks``), trained or not.
    head : torch.nn.Module, optional
        The task head, whose weights go into the file beside the masks.
    **info : dict
        Strings and numbers kept in the file's metadata (task, sparsity, ...).

    Returns
    -------
    size : int
        The file's size in bytes.

    Raises
    ------
    MaskBankError
        ``model`` has no masks.
    """
    masks = binary_masks(model)
    if not masks:
        raise MaskBankError("the model has no masks to save")
    tensors = {f"mask.{name}": pack_mask(m) for name, m in masks.items()}
    if head is not None:
        tensors.update({f"head.{k}": v.detach().cpu().contiguous()
                        for k, v in head.state_dict().items()})
    metadata = {
        "format": FORMAT,
        "layers": json.dumps({name: list(m.shape) for name, m in masks.items()}),
        "backbone_fingerprint": backbone_fingerprint(model, list(masks)),
        "payload_sha256": _payload_digest(tensors),
        "info": json.dumps(info),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return Path(path).stat().st_size


def read_mask_file(path):
    """Read a task file written by ``save_mask``, checked for damage.

    Arguments
    ---------
    path : str or Path
        The ``.safetensors`` file.

    Returns
    -------
    masks : dict
        Layer name -> boolean mask, in the order the file lists the layers.
    head_state : dict
        The head's ``state_dict`` (empty when saved without a head).
    metadata : dict
        The file's metadata: ``format``, ``layers``, ``backbone_fingerprint``,
        ``payload_sha256`` and ``info`` (JSON text).

    Raises
    ------
    MaskBankError
        The file is unreadable, not a mask file, or its checksum does not match.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise MaskBankError(f"{path}: not a readable mask file ({err})") from err
    if metadata.get("format") != FORMAT:
        raise MaskBankError(f"{path}: not an s3brain mask file (format {metadata.get('format')!r})")
    if _payload_digest(tensors) != metadata.get("payload_sha256"):
        raise MaskBankError(f"{path}: checksum mismatch, the file is damaged")
    shapes = json.loads(metadata["layers"])
    masks = {name: unpack_mask(tensors[f"mask.{name}"], shape) for name, shape in shapes.items()}
    head = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
    return masks, head, metadata


class MaskBank:
    """Several tasks' masks and heads on one shared, dense backbone, switched at run time, with
    the verbs of Hugging Face PEFT: ``load_adapter``, ``set_adapter``, ``active_adapter``,
    ``merge_and_unload``.

    The first task loaded attaches a fixed-mask parametrization to each of the file's layers;
    switching tasks then only copies that task's boolean masks into place, so the backbone's
    weights are stored once whatever the number of tasks.

    Arguments
    ---------
    backbone : transformers model or SpeechBrain wrapper
        The shared pretrained backbone, dense (without masks). Masks are attached to it in place.

    Example
    -------
    >>> import tempfile, torch
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> from s3brain.strategies.s3router.masks import add_masks
    >>> config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    ...     intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
    ...     num_feat_extract_layers=2)
    >>> torch.manual_seed(0) and None
    >>> backbone = Wav2Vec2Model(config).eval()
    >>> tasks = {}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for task, seed in (("en", 1), ("de", 2)):
    ...         model = Wav2Vec2Model(config)
    ...         _ = model.load_state_dict(backbone.state_dict())
    ...         _ = add_masks(model, sparsity=0.1, init="ri", seed=seed)
    ...         _ = save_mask(f"{tmp}/{task}.safetensors", model)
    ...         tasks[task] = model.eval()
    ...     bank = MaskBank(backbone)
    ...     for task in tasks:
    ...         _ = bank.load_adapter(f"{tmp}/{task}.safetensors", adapter_name=task)
    >>> _ = bank.set_adapter("de")
    >>> bank.active_adapter, bank.adapters
    ('de', ['en', 'de'])
    >>> x = torch.randn(1, 1600)
    >>> with torch.no_grad():
    ...     masked = backbone(x).last_hidden_state
    ...     plain = bank.merge_and_unload()
    ...     torch.allclose(plain(x).last_hidden_state, masked, atol=1e-6)
    True
    """

    def __init__(self, backbone):
        self.backbone = backbone
        self.masks = {}
        self.heads = {}
        self.info = {}
        self._active = None
        self._fingerprint = None
        self._layers = None
        self._merged = False

    @property
    def active_adapter(self):
        """The name of the task whose masks are in place, or None before ``set_adapter``."""
        return self._active

    @property
    def adapters(self):
        """The names of the loaded tasks, in loading order."""
        return list(self.masks)

    def load_adapter(self, path, adapter_name, head=None):
        """Add a task to the bank from a mask file written by ``save_mask``.

        The file is checked before anything changes: its checksum, its layers (the same as the
        tasks already loaded) and the fingerprint of the backbone weights it was learned on.
        Loading does not activate the task; call ``set_adapter``.

        Arguments
        ---------
        path : str or Path
            The task's ``.safetensors`` file.
        adapter_name : str
            The name the task is known by in the bank (a language, a SUPERB task, ...).
        head : torch.nn.Module, optional
            A module of the task head's architecture; it receives the head weights stored in
            the file. Without it, the file's head weights are ignored.

        Returns
        -------
        head : torch.nn.Module or None
            ``head``, now holding the task's weights.

        Raises
        ------
        MaskBankError
            The file is damaged, is not a mask file, names other layers, or was made on a
            backbone with other weights.
        """
        self._check_not_merged()
        masks, head_state, metadata = read_mask_file(path)
        layers = list(masks)
        if self._layers is None:
            self._attach(layers)
        elif layers != self._layers:
            raise MaskBankError(f"{path}: masks over other layers than the bank's "
                                f"({len(layers)} vs {len(self._layers)} layers)")
        if metadata["backbone_fingerprint"] != self._fingerprint:
            raise MaskBankError(f"{path}: made for another backbone (its weight fingerprint "
                                f"differs from the loaded backbone's)")
        if head is not None:
            head.load_state_dict(head_state)
        self.masks[adapter_name] = masks
        self.heads[adapter_name] = head
        self.info[adapter_name] = json.loads(metadata["info"])
        return head

    def _attach(self, layers):
        modules = masked_linears(self.backbone)
        if modules:
            raise MaskBankError("the backbone already carries masks; give the bank a dense one")
        model = hf_model(self.backbone)
        all_modules = dict(model.named_modules())
        missing = [n for n in layers if n not in all_modules]
        if missing:
            raise MaskBankError(f"the mask file names layers the backbone lacks: {missing[:3]}")
        fingerprint = backbone_fingerprint(model, layers)
        for name in layers:
            linear = all_modules[name]
            linear.weight.requires_grad_(False)
            ones = torch.ones_like(linear.weight, dtype=torch.bool)
            parametrize.register_parametrization(linear, "weight", FixedMask(ones))
        self._fingerprint = fingerprint
        self._layers = layers

    def set_adapter(self, adapter_name):
        """Make a loaded task the active one: copy its masks into the backbone's layers.

        Arguments
        ---------
        adapter_name : str
            A name given to ``load_adapter``.

        Returns
        -------
        head : torch.nn.Module or None
            The task's head, as given to ``load_adapter``.

        Raises
        ------
        KeyError
            No task of that name was loaded.
        """
        self._check_not_merged()
        if adapter_name not in self.masks:
            raise KeyError(f"no task {adapter_name!r} in the bank; loaded: {sorted(self.masks)}")
        modules = masked_linears(self.backbone)
        with torch.no_grad():
            for layer, mask in self.masks[adapter_name].items():
                modules[layer].parametrizations.weight[0].mask.copy_(mask)
        self._active = adapter_name
        return self.heads[adapter_name]

    def merge_and_unload(self):
        """Fold the active task's masks into the backbone's weights and remove the masks.

        The backbone becomes a plain model (a transformers model, or the SpeechBrain wrapper
        around one) computing what the masked backbone computed for the active task; it no
        longer holds the other tasks, so the bank cannot be used afterwards.

        Returns
        -------
        backbone : torch.nn.Module
            The backbone given to the bank, now with plain, masked-out weights.

        Raises
        ------
        MaskBankError
            No task is active yet (call ``set_adapter`` first), or the bank was already merged.
        """
        self._check_not_merged()
        if self._active is None:
            raise MaskBankError("no active task to merge; call set_adapter first")
        fold(self.backbone)
        self.masks.clear()
        self._merged = True
        return self.backbone

    def _check_not_merged(self):
        if self._merged:
            raise MaskBankError(f"the bank was merged into a plain model for task "
                                f"{self._active!r}; make a new MaskBank on a dense backbone")


def remove_masks(model):
    """Remove every mask of ``model`` and leave its original weights, in place: the shared
    backbone a mask bank starts from (PEFT's ``unload``, where ``fold`` is its
    ``merge_and_unload``).

    Arguments
    ---------
    model : transformers model or SpeechBrain wrapper
        A backbone carrying masks (learned or fixed).

    Returns
    -------
    model : torch.nn.Module
        ``model``, dense, with the weights the masks multiplied.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> from s3brain.strategies.s3router.masks import add_masks
    >>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8,), conv_stride=(5,),
    ...     conv_kernel=(10,), num_feat_extract_layers=1, num_conv_pos_embedding_groups=2))
    >>> before = model.encoder.layers[0].feed_forward.output_dense.weight.clone()
    >>> _ = add_masks(model, sparsity=0.5)
    >>> after = remove_masks(model).encoder.layers[0].feed_forward.output_dense.weight
    >>> bool(torch.equal(before, after)), masked_linears(model)
    (True, {})
    """
    for linear in masked_linears(model).values():
        remove_parametrization(linear, "weight", leave_parametrized=False)
    return model
