"""Bottleneck adapters in every transformer block, the backbone frozen (adapter tuning).

Each block's feed-forward output ``h`` becomes ``h + up(gelu(down(LayerNorm(h))))``, added by a
forward hook, so the transformers model keeps its modules and state-dict keys and the adapters
live (and are saved) apart from it, as with PEFT. ``up`` starts at zero: at initialisation the
model computes exactly what the pretrained one does.

Example
-------
>>> import torch
>>> from transformers import Wav2Vec2Config, Wav2Vec2Model
>>> model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2,
...     num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
...     conv_kernel=(10, 3), num_feat_extract_layers=2)).eval()
>>> x = torch.randn(1, 1600)
>>> with torch.no_grad():
...     before = model(x).last_hidden_state
>>> adapters = Adapters(model, bottleneck=8)
>>> with torch.no_grad():
...     torch.equal(model(x).last_hidden_state, before)
True
>>> sum(p.numel() for p in adapters.parameters()), any(p.requires_grad for p in model.parameters())
(1232, False)
"""

from torch import nn

from s3brain.families import family, hf_model


class Adapter(nn.Module):
    """A bottleneck adapter: LayerNorm, down-projection, GELU, up-projection.

    The up-projection starts at zero, so a freshly added adapter leaves the backbone's output
    unchanged.

    Arguments
    ---------
    hidden_size : int
        Width of the hidden states the adapter reads and adds to.
    bottleneck : int
        Width of the down-projection.

    Example
    -------
    >>> import torch
    >>> adapter = Adapter(hidden_size=16, bottleneck=4)
    >>> adapter(torch.randn(2, 10, 16)).abs().max().item()
    0.0
    """

    def __init__(self, hidden_size, bottleneck):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden):
        """The adapter's residual branch (what gets added to the block's output).

        Arguments
        ---------
        hidden : torch.Tensor
            Hidden states, ``[batch, time, hidden_size]``.

        Returns
        -------
        delta : torch.Tensor
            Same shape as ``hidden``.
        """
        return self.up(nn.functional.gelu(self.down(self.norm(hidden))))

    def add_to_output(self, module, inputs, output):
        """Forward hook on a block's feed-forward: its output plus this adapter's. A bound method
        (not a closure), so a deep copy of the backbone and its adapters calls the copied
        adapter: the cost report measures a CPU copy while the trained ones stay on the GPU."""
        return output + self(output)


class Adapters(nn.ModuleList):
    """One ``Adapter`` per transformer block of ``model`` (a transformers model or SpeechBrain
    wrapper), hooked after each block's feed-forward; freezes every backbone parameter."""

    def __init__(self, model, bottleneck=64):
        inner = hf_model(model)
        names = family(inner)
        blocks = inner.get_submodule(names.blocks)
        super().__init__([Adapter(inner.config.hidden_size, bottleneck) for _ in blocks])
        for p in inner.parameters():
            p.requires_grad_(False)
        feed_forward = names.ffn[0].rsplit(".", 1)[0]  # the module holding the FFN's layers
        self._hooks = [block.get_submodule(feed_forward).register_forward_hook(adapter.add_to_output)
                       for adapter, block in zip(self, blocks)]

    def remove(self):
        """Take the adapters out of the model's forward."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
