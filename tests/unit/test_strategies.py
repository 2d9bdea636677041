"""The strategy protocol (s3brain.strategies): list checks, deployable models, task payloads (the
training-loop hooks in the utterance-level Brain:
``tests/integration/test_utterance_recipe.py``)."""

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from s3brain import strategies as st
from s3brain.strategies.pruning.schedules import OneShotMagnitudePruning
from s3brain.strategies.pruning.structured import Safari, prune_count, split_sparsity
from s3brain.strategies.s3router.mask_bank import read_mask_file
from s3brain.strategies.s3router.masks import binary_masks, weight_sparsity

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
             num_feat_extract_layers=2)


def small_model(seed=0):
    torch.manual_seed(seed)
    return Wav2Vec2Model(Wav2Vec2Config(**SMALL)).eval()


class ChangesForward(st.Strategy):
    changes_forward = True


def test_two_strategies_that_change_the_forward_are_refused():
    with pytest.raises(ValueError, match="ChangesForward"):
        st.setup_strategies([ChangesForward(), st.Strategy(), ChangesForward()], small_model(), {})
    st.setup_strategies([ChangesForward(), st.Strategy()], small_model(), {})  # one is fine


def test_mask_payload_is_the_mask_file_and_only_on_a_shared_backbone(tmp_path):
    model, head = small_model(), torch.nn.Linear(32, 5)
    masks = st.Masks(sparsity=0.2, init="ri", scope="both")
    masks.setup(model, {"seed": 3})
    size = st.task_payload([st.InitFrom(None), masks], tmp_path, model, head, {"task": "t"})
    assert size == (tmp_path / "task_mask.safetensors").stat().st_size
    # every masked layer is in the file, at the mask's exact sparsity: the 4 attention and 2
    # FFN linears of each of the 2 blocks, each keeping round(0.8 * its weights)
    file_masks, file_head, _ = read_mask_file(tmp_path / "task_mask.safetensors")
    layers = {f"encoder.layers.{b}.{name}": module
              for b, block in enumerate(model.encoder.layers)
              for name, module in (("attention.q_proj", block.attention.q_proj),
                                   ("attention.k_proj", block.attention.k_proj),
                                   ("attention.v_proj", block.attention.v_proj),
                                   ("attention.out_proj", block.attention.out_proj),
                                   ("feed_forward.intermediate_dense",
                                    block.feed_forward.intermediate_dense),
                                   ("feed_forward.output_dense", block.feed_forward.output_dense))}
    assert set(file_masks) == set(layers) and len(layers) == 2 * (4 + 2)
    in_memory = binary_masks(model)
    for name, mask in file_masks.items():
        weight = layers[name].weight
        assert mask.dtype == torch.bool and mask.shape == weight.shape, name
        assert int(mask.sum()) == round(0.8 * weight.numel()), name
        assert torch.equal(mask, in_memory[name]), name
    assert file_head.keys() == head.state_dict().keys()
    assert all(torch.equal(file_head[k], v) for k, v in head.state_dict().items())
    # started from a fine-tuned run: the weights are the run's own, a task is a whole model
    other = tmp_path / "other"
    assert st.task_payload([st.InitFrom("results/x"), masks], other, model, head, {}) is None
    assert not other.exists()
    assert st.run_sparsity([st.InitFrom(None), masks]) == pytest.approx(0.2)


def test_deployable_folds_masks_and_shrinks_structured_pruning():
    model = small_model()
    x = torch.randn(1, 1600)
    omp = st.Pruning(OneShotMagnitudePruning(sparsity=0.5))
    omp.setup(model, {})
    with torch.no_grad():
        reference = model(x).last_hidden_state
    deployed = st.deployable([omp], model)
    assert not binary_masks(deployed)  # folded: plain weights
    assert round(weight_sparsity(deployed), 2) == 0.5
    with torch.no_grad():
        assert torch.allclose(deployed(x).last_hidden_state, reference, atol=1e-5)

    model = small_model()
    safari = st.Pruning(Safari(sparsity=0.5, gap=0.2))
    safari.setup(model, {})
    with torch.no_grad():
        reference = model(x).last_hidden_state
    shrunk = st.deployable([safari], model)
    sp_ffn, sp_heads = split_sparsity(0.5, 0.2)
    layer = shrunk.encoder.layers[0]
    assert layer.feed_forward.intermediate_dense.out_features == 64 - prune_count(64, sp_ffn)
    assert layer.attention.q_proj.out_features == 8 * (4 - prune_count(4, sp_heads))
    assert layer.attention.q_proj.out_features < 32
    with torch.no_grad():
        assert torch.allclose(shrunk(x).last_hidden_state, reference, atol=1e-4)


class Lobe(torch.nn.Module):
    """The attributes of SpeechBrain's wav2vec2 lobe that the strategies use."""

    def __init__(self, model):
        super().__init__()
        self.model, self.normalize_wav, self.output_norm = model, False, False

    def forward(self, wavs, wav_lens=None):
        return self.model(wavs).last_hidden_state


def flops(module, wav):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(wav)
    return counter.get_total_flops()


def test_s6damon_list_deploys_shrunk_and_dropped():
    """SAFARI and uniform token dropping in one list: the deployed backbone is the shrunk model
    on the share of frames measured on the test pass, cheaper than either alone."""
    import speechbrain as sb

    wav = torch.randn(1, 16000)
    full = Lobe(small_model())
    frames = full(wav).shape[1]

    def deployed(strategies):
        lobe = Lobe(small_model())
        st.setup_strategies(strategies, lobe, {"strategies": strategies})
        for s in strategies:  # one test pass measures the share of frames kept
            s.stage_start(sb.Stage.TEST)
        st.encode(strategies, lobe, wav, None, sb.Stage.TEST)
        stats = {k: v for s in strategies for k, v in s.stage_stats(sb.Stage.TEST).items()}
        return st.deployable(strategies, lobe), stats

    both, stats = deployed([st.Pruning(Safari(sparsity=0.5)),
                            st.TokenDropping("uniform", drop_share=0.5)])
    assert stats == {"kept_share": pytest.approx(0.5, abs=1 / frames)}
    assert both(wav).shape[1] == round(frames * stats["kept_share"])
    assert both.model.encoder.layers[0].feed_forward.intermediate_dense.out_features < 64
    shrunk_only, _ = deployed([st.Pruning(Safari(sparsity=0.5))])
    dropped_only, _ = deployed([st.TokenDropping("uniform", drop_share=0.5)])
    assert flops(both, wav) < min(flops(shrunk_only, wav), flops(dropped_only, wav))
    assert max(flops(shrunk_only, wav), flops(dropped_only, wav)) < flops(full, wav)


def test_distillation_loss_is_the_layerwise_mse_on_the_kept_frames():
    """Against a direct computation, without the implementation's helpers: the teacher's
    blocks on the whole utterance (transformers' ``output_hidden_states``), indexed at the
    frames the student kept; mean squared error per block over the kept frames, averaged
    over blocks, weighted."""
    import copy
    from types import SimpleNamespace

    import speechbrain as sb

    student_lobe = Lobe(small_model(seed=0))
    teacher_lobe = Lobe(small_model(seed=1))
    dropping = st.TokenDropping("uniform", drop_share=0.5)
    distill = st.Distillation(weight=2.0, teacher_from="unused")
    distill.student, distill.teacher = dropping, teacher_lobe.requires_grad_(False)
    dropping.collect_blocks = True
    wav = torch.randn(2, 16000)
    lens = torch.tensor([1.0, 0.75])
    st.encode([distill, dropping], student_lobe, wav, lens, sb.Stage.TRAIN)
    batch = SimpleNamespace(sig=(wav, lens))
    loss = distill.loss(None, batch, sb.Stage.TRAIN)

    mask = (torch.arange(16000)[None, :] < (lens * 16000).round()[:, None]).long()
    with torch.no_grad():
        hidden_states = teacher_lobe.model(wav, attention_mask=mask,
                                           output_hidden_states=True).hidden_states
    # base layout: hidden_states[0] is the blocks' input, [i + 1] block i's output
    teacher_blocks = hidden_states[1:]
    kept = dropping.kept  # [utterance, frame] bool: the frames the student kept
    assert kept.shape == teacher_blocks[0].shape[:2] and 0 < kept.sum() < kept.numel()
    assert len(dropping.blocks) == len(teacher_blocks) == 2
    expected = 0.0
    for teacher, student in zip(teacher_blocks, dropping.blocks):
        squared, frames = 0.0, 0
        for b in range(len(wav)):
            t_kept = teacher[b][kept[b]]  # the kept frames, in order
            squared = squared + ((student[b, :len(t_kept)] - t_kept) ** 2).sum()
            frames += len(t_kept)
        expected = expected + squared / (frames * teacher.shape[-1])
    expected = 2.0 * expected / len(teacher_blocks)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() > 0
    assert distill.loss(None, batch, sb.Stage.VALID) is None  # a training term only
    assert copy.deepcopy(distill) is distill  # a cost copy shares the teacher
