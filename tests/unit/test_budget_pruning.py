"""Pruning to a FLOPs budget of the whole backbone (s3brain.strategies.pruning.budget), on a tiny
model of every family and layout: the shrunk model computes what the masked one did, loads with
transformers alone, and its counted FLOPs meet the target; and distillation without token
dropping (s3brain.strategies.distillation)."""

import copy
import io
from contextlib import redirect_stderr
from types import SimpleNamespace

import pytest
import speechbrain as sb
import torch
from transformers import AutoModel

from s3brain import strategies as st
from s3brain.backbone.tiny_models import FAMILY_LAYOUTS, tiny_model
from s3brain.backbone.wrapper import wrapper_forward
from s3brain.strategies.pruning import budget as B
from s3brain.strategies.pruning.structured import save_shrunk
from s3brain.strategies.token_dropping import SaladDetector
from s3brain.training.experiment import setup_errors
from s3brain.utils.efficiency import count_flops

TARGET = 0.33
#: how far under the target the counted FLOPs may land: the units put back after the greedy
#: removal leave less than one unit's FLOPs unused (an FFN unit: 0.05 % of these models)
TOLERANCE = 0.005
TEN_SECONDS = torch.randn(1, 160000, generator=torch.Generator().manual_seed(0)) * 0.1


class Lobe(torch.nn.Module):
    """What the strategies use of SpeechBrain's wav2vec2 lobe."""

    def __init__(self, model):
        super().__init__()
        self.model, self.normalize_wav, self.output_norm = model, False, False

    def forward(self, wavs, wav_lens=None):
        return wrapper_forward(self, wavs, wav_lens)


def counted(model):
    """FLOPs of ``model`` on 10 s of audio, counted by the project's counter."""
    with torch.no_grad():
        return count_flops(lambda wav: model.eval()(wav), TEN_SECONDS)


def loss_of(model, wav, seed=0):
    """A loss on the backbone's output: its projection on a fixed random direction (the mean
    square of a layer-normed output would hardly depend on anything)."""
    out = model(wav).last_hidden_state
    return (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))).mean()


def train_step(model, seed=0):
    """One backward pass of a loss on the backbone's output (the gates gather importance)."""
    model.train()
    loss_of(model, torch.randn(2, 8000, generator=torch.Generator().manual_seed(seed))).backward()
    model.zero_grad()


def pruned(family, layout, target=TARGET):
    """A tiny model gated, given one step of importance and pruned to ``target`` at once."""
    model = tiny_model(family, layout)
    pruning = B.BudgetPruning(target, prune_every=1, prune_until=1)
    pruning.setup(model, {})
    train_step(model)
    pruning.on_step(model, 1)
    return model.eval(), pruning


@pytest.mark.parametrize("family, layout", FAMILY_LAYOUTS)
def test_shrunk_model_is_the_masked_one_loads_alone_and_meets_the_budget(family, layout,
                                                                         tmp_path):
    model, pruning = pruned(family, layout)
    dense = counted(tiny_model(family, layout))
    assert pruning.flops.dense == dense
    counts = B.kept_counts(B.budget_gates(model))
    wav = torch.randn(2, 12000, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 12000, dtype=torch.long)
    mask[1, 9000:] = 0
    with torch.no_grad():
        masked = model(wav, attention_mask=mask).last_hidden_state
        shrunk = B.shrink_budget(model)
        assert torch.allclose(shrunk(wav, attention_mask=mask).last_hidden_state, masked,
                              atol=1e-5)
    assert not B.budget_gates(shrunk)  # no gate, hook or parametrization left
    assert not any("budget_gate" in k or ("parametrizations" in k and "pos_conv" not in k)
                   for k in shrunk.state_dict())  # the positional conv's weight norm is stock
    # CNN channels, heads and FFN units were all removed
    config = shrunk.config
    assert len(config.conv_dim) == 7 and sum(config.conv_dim) < 7 * 16
    assert sum(config.layer_attention_heads) < 2 * 4
    assert sum(config.layer_intermediate_sizes) < 2 * 64
    # saved, it loads with transformers alone and computes the same
    save_shrunk(shrunk, tmp_path / "shrunk")
    loaded = AutoModel.from_pretrained(tmp_path / "shrunk", trust_remote_code=True).eval()
    assert list(loaded.config.conv_dim) == list(config.conv_dim)
    with torch.no_grad():
        assert torch.allclose(loaded(wav, attention_mask=mask).last_hidden_state, masked,
                              atol=1e-5)
    # the deployed FLOPs, counted on the loaded model, meet the target, and the cost model
    # the pruning chose by is exact
    flops = counted(loaded)
    assert flops == pruning.flops.count(counts)
    assert TARGET - TOLERANCE <= flops / dense <= TARGET


def test_an_impossible_target_is_refused_in_one_line_before_training():
    model = tiny_model("wav2vec2", "base")
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as exit_, setup_errors():
        B.BudgetPruning(0.001).setup(model, {})
    assert exit_.value.code == 2
    line = err.getvalue()
    assert line.startswith("ERROR: target_flops_ratio=0.001 is out of reach")
    assert line.count("\n") == 1 and "give at least" in line
    assert not B.budget_gates(model)  # refused before anything was changed
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="target_flops_ratio"):
            B.BudgetPruning(bad)


def test_the_schedule_prunes_gradually_then_stops():
    model = tiny_model("wav2vec2", "large")
    pruning = B.BudgetPruning(0.4, prune_every=2, prune_until=5)
    pruning.setup(model, {})
    gates = B.budget_gates(model)
    ratios = []
    for step in range(1, 8):
        train_step(model, seed=step)
        pruning.on_step(model, step)
        ratios.append(pruning.flops.count(B.kept_counts(gates)) / pruning.flops.dense)
        assert pruning.at_target(step) == (step >= 5)
    # events at steps 2, 4 and 5, each to the cubic's budget; nothing moves in between or after
    assert ratios[0] == 1.0 and ratios[1] == ratios[2] and ratios[4] == ratios[5] == ratios[6]
    assert 1.0 > ratios[1] > ratios[4]
    for step in (2, 4, 5):
        assert pruning.ratio_at(step) - TOLERANCE <= ratios[step - 1] <= pruning.ratio_at(step)
    assert pruning.ratio_at(5) == 0.4
    assert not any(gate.capture for gate in gates.values())  # no more importance gathered
    pruning.before_eval(model)
    assert pruning.stage_stats(sb.Stage.VALID) == {"flops_ratio": round(ratios[4], 4)}


def test_importance_is_the_derivative_of_scaling_each_units_output():
    """A gate's gradient against a direct computation: the loss's derivative with respect to a
    scale on one FFN unit's activation and on one CNN channel's output."""
    model = tiny_model("hubert", "base").eval()
    B.add_budget_gates(model)
    gates = B.budget_gates(model)
    for gate in gates.values():
        gate.capture = True
    wav = torch.randn(1, 8000, generator=torch.Generator().manual_seed(2))
    scale = torch.ones((), requires_grad=True)
    block = model.encoder.layers[1].feed_forward
    unit, channel = 5, 3

    def scaled(size, index):
        ones = torch.ones(size)
        return torch.cat([ones[:index], scale.view(1), ones[index + 1:]])

    def scaled_unit(module, args):
        return (args[0] * scaled(args[0].shape[-1], unit),)

    def scaled_channel(module, args, output):
        return output * scaled(output.shape[1], channel)[:, None]

    for register, gate, index in (
            (lambda: block.output_dense.register_forward_pre_hook(scaled_unit), gates["1.ffn"],
             unit),
            (lambda: model.feature_extractor.conv_layers[4].register_forward_hook(scaled_channel),
             gates["conv.4"], channel)):
        hook = register()
        loss_of(model, wav).backward()
        hook.remove()
        assert gate.step_grad[index].item() == pytest.approx(scale.grad.item(), rel=1e-4)
        assert scale.grad.abs() > 0
        scale.grad = None
        for each in gates.values():
            each.end_step()
    assert gates["0.heads"].score.abs().sum() > 0  # every gate gathered its importance


def test_with_salad_the_last_conv_layer_keeps_its_channels_and_both_deploy():
    model = Lobe(tiny_model("wav2vec2", "base"))
    dropping = st.TokenDropping("salad", skip_ratio=0.5,
                                detector=SaladDetector(16, channels=8, layers=2))
    pruning = B.BudgetPruning(TARGET, prune_every=1, prune_until=1)
    pruning.setup(model, {"strategies": [pruning, dropping]})
    train_step(model.model)
    pruning.on_step(model, 1)
    wav = torch.randn(1, 16000)
    st.encode([pruning, dropping], model.eval(), wav, None, sb.Stage.TEST)  # the detector reads
    dropping.stage_stats(sb.Stage.TEST)  # the kept share the deployed copy keeps
    deployed = st.deployable([pruning, dropping], copy.deepcopy(model))
    assert deployed.model.config.conv_dim[-1] == 16 and sum(deployed.model.config.conv_dim) < 7 * 16
    frames = deployed(wav).shape[1]
    assert deployed(wav).shape[-1] == 32 and 0 < frames < 49  # shrunk, and frames dropped
    assert B.budget_gates(model)  # the run's model keeps its gates


def test_deployed_cost_counts_the_shrunk_copy_and_a_checkpoint_restores_the_masks():
    model, pruning = pruned("wavlm", "base")
    results = {}
    pruning.deployed_cost(results, model, 10)
    shrunk = B.shrink_budget(copy.deepcopy(model))
    assert results["backbone_flops_10s"] == counted(shrunk)
    assert results["backbone_flops_10s_dense"] == pruning.flops.dense
    assert results["backbone_flops_ratio"] == round(counted(shrunk) / pruning.flops.dense, 4)
    assert B.budget_gates(model)  # measured on a copy
    # a resumed run: set up afresh, the checkpoint brings back the masks and importances
    fresh = tiny_model("wavlm", "base")
    B.BudgetPruning(TARGET).setup(fresh, {})
    fresh.load_state_dict(model.state_dict())
    for name, gate in B.budget_gates(fresh).items():
        assert torch.equal(gate.keep, B.budget_gates(model)[name].keep), name


def test_distillation_without_token_dropping_is_the_layerwise_mse_on_every_frame():
    """Against a direct computation: every block's output of the student (transformers'
    ``output_hidden_states``) against the teacher's, on the utterances' real frames."""

    student = Lobe(tiny_model("wav2vec2", "base", seed=0))
    student.model.config.layerdrop = 0.0
    distill = st.Distillation(weight=2.0, teacher_from="unused")
    distill.teacher = Lobe(tiny_model("wav2vec2", "base", seed=1)).requires_grad_(False).eval()
    distill.student = st.distillation.StudentBlocks(student)
    wav = torch.randn(2, 16000, generator=torch.Generator().manual_seed(3))
    lens = torch.tensor([1.0, 0.6])
    student.train()(wav, lens)
    loss = distill.loss(None, SimpleNamespace(sig=(wav, lens)), sb.Stage.TRAIN)

    mask = (torch.arange(16000)[None, :] < (lens * 16000).round()[:, None]).long()
    with torch.no_grad():
        theirs = distill.teacher.model(wav, attention_mask=mask,
                                       output_hidden_states=True).hidden_states[1:]
    frames = student.model._get_feat_extract_output_lengths(mask.sum(1))
    expected = 0.0
    for t_hidden, s_hidden in zip(theirs, distill.student.blocks):
        squared = sum(((s_hidden[b, :n] - t_hidden[b, :n]) ** 2).sum()
                      for b, n in enumerate(frames.tolist()))
        expected = expected + squared / (frames.sum() * t_hidden.shape[-1])
    assert len(distill.student.blocks) == 2
    assert loss.item() == pytest.approx((2.0 * expected / 2).item(), rel=1e-5) and loss > 0
    student.eval()(wav, lens)  # evaluation passes are not collected
    assert len(distill.student.blocks) == 2
