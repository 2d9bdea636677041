"""The heads of the utterance-level tasks (SUPERB KS, SID, IC): a learned weighted sum of
every hidden layer of the backbone, pooled over time, then one classifier per target
(one target for most tasks; action, object and location for intent); ``build_head`` sizes it
by the backbone and the label sets.

Example
-------
>>> import torch
>>> head = UtteranceHead(layers=3, input_size=8, classes={"label": 4}, projection=6)
>>> out = head(torch.randn(3, 2, 5, 8), torch.tensor([1.0, 0.6]))
>>> out["label"].shape
torch.Size([2, 4])
"""

import torch
from torch import nn

from s3brain.backbone.wrapper import hidden_layer_count, hidden_size


class WeightedLayerSum(nn.Module):
    """``sum_l softmax(w)_l * hidden_l`` over the stacked hidden layers ``[L, B, T, D]``.

    Arguments
    ---------
    layers : int
        Number of hidden layers the backbone returns (embeddings and each block).

    Example
    -------
    >>> layer_sum = WeightedLayerSum(3)
    >>> layer_sum(torch.ones(3, 2, 5, 4)).shape
    torch.Size([2, 5, 4])
    """

    def __init__(self, layers):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(layers))

    def forward(self, hiddens):
        """The weighted sum of the hidden layers.

        Arguments
        ---------
        hiddens : torch.Tensor
            Every hidden layer, ``[L, B, T, D]``.

        Returns
        -------
        torch.Tensor
            ``[B, T, D]``.
        """
        if hiddens.dim() != 4 or hiddens.shape[0] != self.weights.numel():
            raise ValueError(f"the weighted layer sum was built for {self.weights.numel()} hidden "
                             f"layers [L, B, T, D], got shape {tuple(hiddens.shape)}: size it with "
                             f"s3brain.backbone.hidden_layer_count and load the backbone with "
                             f"output_all_hiddens")
        w = torch.softmax(self.weights, dim=0)
        return (w.view(-1, 1, 1, 1) * hiddens).sum(0)


class UtteranceHead(nn.Module):
    """Weighted layer sum -> linear projection -> mean over real frames -> a classifier per
    target.

    Arguments
    ---------
    layers : int
        Number of hidden layers the backbone returns.
    input_size : int
        Their feature size.
    classes : dict
        ``{target: number of classes}``.
    projection : int
        Size of the projection before pooling.

    Example
    -------
    >>> head = UtteranceHead(2, 8, {"action": 3, "object": 5}, projection=4)
    >>> {t: tuple(y.shape) for t, y in head(torch.randn(2, 1, 7, 8)).items()}
    {'action': (1, 3), 'object': (1, 5)}
    """

    def __init__(self, layers, input_size, classes, projection=256):
        super().__init__()
        self.layer_sum = WeightedLayerSum(layers)
        self.projection = nn.Linear(input_size, projection)
        self.classifiers = nn.ModuleDict({t: nn.Linear(projection, n) for t, n in classes.items()})

    @classmethod
    def sized_by(cls, state):
        """The head as the recipe built it (``build_head``), sized by its saved tensors.

        Arguments
        ---------
        state : dict
            The head's ``state_dict`` (a checkpoint's or a mask file's).

        Returns
        -------
        UtteranceHead
            Untrained; load ``state`` into it.

        Example
        -------
        >>> head = UtteranceHead(layers=3, input_size=8, classes={"a": 4, "b": 2}, projection=6)
        >>> UtteranceHead.sized_by(head.state_dict()).export_args() == head.export_args()
        True
        """
        targets = [k.split(".")[1] for k in state
                   if k.startswith("classifiers.") and k.endswith(".weight")]
        projection, input_size = state["projection.weight"].shape
        return cls(state["layer_sum.weights"].numel(), input_size,
                   {t: state[f"classifiers.{t}.weight"].shape[0] for t in targets}, projection)

    def export_args(self):
        """The constructor's arguments, for an inference folder's yaml."""
        return {"layers": self.layer_sum.weights.numel(),
                "input_size": self.projection.in_features,
                "classes": {t: c.out_features for t, c in self.classifiers.items()},
                "projection": self.projection.out_features}

    def forward(self, hiddens, wav_lens=None):
        """Logits per target, pooled over the real (unpadded) frames.

        Arguments
        ---------
        hiddens : torch.Tensor
            Every hidden layer, ``[L, B, T, D]``.
        wav_lens : torch.Tensor, optional
            Relative lengths ``[B]`` (None: every frame is real).

        Returns
        -------
        dict
            ``{target: logits [B, classes]}``.
        """
        x = self.projection(self.layer_sum(hiddens))
        frames = x.shape[1]
        if wav_lens is None:
            pooled = x.mean(1)
        else:
            lengths = (wav_lens * frames).round().clamp(min=1)
            mask = (torch.arange(frames, device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)
            pooled = (x * mask).sum(1) / lengths[:, None]
        return {t: clf(pooled) for t, clf in self.classifiers.items()}


def build_head(ssl, encoders, projection=256):
    """The task's head, sized by what the backbone really returns (its hidden layers, not
    assumed from its config) and by the label sets.

    Arguments
    ---------
    ssl : torch.nn.Module
        The backbone wrapper, loaded with ``output_all_hiddens``.
    encoders : dict
        ``{target: CategoricalEncoder}`` (``dataio_prepare``).
    projection : int
        Size of the head's projection.

    Returns
    -------
    UtteranceHead
    """
    return UtteranceHead(hidden_layer_count(ssl), hidden_size(ssl),
                         {t: len(e) for t, e in encoders.items()}, projection)
