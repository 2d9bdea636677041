"""Per-task (per-language) S3-Router masks on one shared, frozen backbone.

A task is stored as one small safetensors file: its masks bit-packed (1 bit per masked weight)
and its head's weights, with metadata naming the layers, their shapes, a fingerprint of the
backbone weights the masks were learned on and a checksum of the payload. ``MaskBank`` gives
them the verbs PEFT users know: ``load_mask(path, name)``, ``set_task(name)``, ``fold()``.

Example
-------
>>> import tempfile, torch
>>> from transformers import Wav2Vec2Config, Wav2Vec2Model
>>> from s3brain.masks import add_masks, binary_masks
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
...     head = bank.load_mask(f"{tmp}/en.safetensors", "en", head=torch.nn.Linear(32, 5))
>>> bank.set_task("en") is head, bank.active_task
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

from s3brain.masks import FixedMask, binary_masks, fold, hf_model, masked_linears

FORMAT = "s3brain-mask-bank/1"


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
    """Save the masks of ``model`` (and ``head``'s weights) as one task file; return its size in
    bytes. ``info`` (strings, numbers) is kept in the metadata (task, sparsity, ...)."""
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
    """``(masks, head_state, metadata)`` of a task file, checked for damage."""
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
    """Several tasks' masks and heads on one shared backbone, switched at run time.

    Parameters
    ----------
    backbone : transformers model or SpeechBrain wrapper
        The shared pretrained backbone, dense. Masks are attached to it in place.
    """

    def __init__(self, backbone):
        self.backbone = backbone
        self.masks = {}
        self.heads = {}
        self.info = {}
        self.active_task = None
        self._fingerprint = None
        self._layers = None

    def load_mask(self, path, name, head=None):
        """Add task ``name`` from ``path``; ``head`` (a module) receives the task's head weights
        and is returned."""
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
        self.masks[name] = masks
        self.heads[name] = head
        self.info[name] = json.loads(metadata["info"])
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
        self._fingerprint = backbone_fingerprint(model, layers)
        for name in layers:
            linear = all_modules[name]
            linear.weight.requires_grad_(False)
            ones = torch.ones_like(linear.weight, dtype=torch.bool)
            parametrize.register_parametrization(linear, "weight", FixedMask(ones))
        self._layers = layers

    def set_task(self, name):
        """Make ``name`` the active task (copies its masks into place); returns its head."""
        if name not in self.masks:
            raise KeyError(f"no task {name!r} in the bank; loaded: {sorted(self.masks)}")
        modules = masked_linears(self.backbone)
        with torch.no_grad():
            for layer, mask in self.masks[name].items():
                modules[layer].parametrizations.weight[0].mask.copy_(mask)
        self.active_task = name
        return self.heads[name]

    def fold(self):
        """Bake the active task's masks into the backbone's weights (``merge_and_unload``): the
        backbone becomes a plain transformers model of that task. The bank is spent."""
        if self.active_task is None:
            raise MaskBankError("no active task to fold; call set_task first")
        fold(self.backbone)
        self.masks.clear()
        return self.backbone
