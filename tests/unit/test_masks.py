"""S3-Router masks, the mask bank and the magnitude-pruning baselines on small HF models."""

import copy

import pytest
import torch
from transformers import AutoModel, Data2VecAudioConfig, HubertConfig, Wav2Vec2Config, WavLMConfig

from s3brain.strategies.pruning.schedules import (
    IterativeMagnitudePruning,
    OneShotMagnitudePruning,
    PruneAdjustReprune,
)
from s3brain.strategies.s3router import masks as M
from s3brain.strategies.s3router.mask_bank import (
    MaskBank,
    MaskBankError,
    pack_mask,
    save_mask,
    unpack_mask,
)

SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
             conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2,
             hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
             feat_proj_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0)


def small_model(config_class=Wav2Vec2Config, seed=0):
    torch.manual_seed(seed)
    return AutoModel.from_config(config_class(**SMALL)).eval()


def audio(batch=2, samples=1600, seed=1):
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def train_scores(model, steps=3, lr=0.05, seed=1):
    """A few Adam steps on whatever is trainable (the scores), loss = output energy."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    for step in range(steps):
        loss = model(audio(seed=seed + step)).last_hidden_state.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("config_class", [Wav2Vec2Config, HubertConfig, WavLMConfig,
                                          Data2VecAudioConfig])
@pytest.mark.parametrize("scope,per_block", [("ffn", 2), ("attention", 4), ("both", 6)])
def test_every_family_and_scope_masks_the_right_layers(config_class, scope, per_block):
    model = small_model(config_class)
    names = M.add_masks(model, sparsity=0.2, scope=scope, blocks=[0, 2])
    assert len(names) == 2 * per_block
    assert all(n.startswith(("encoder.layers.0.", "encoder.layers.2.")) for n in names)
    assert set(M.masked_linears(model)) == set(names)
    out = model(audio()).last_hidden_state
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("sparsity", [0.02, 0.1, 0.3, 0.9])
@pytest.mark.parametrize("init", M.INITS)
def test_sparsity_is_exact_per_layer(sparsity, init):
    model = small_model()
    M.add_masks(model, sparsity=sparsity, init=init, scope="both")
    for name, mask in M.binary_masks(model).items():
        assert int((~mask).sum()) == mask.numel() - M.kept_count(mask.numel(), sparsity), name
    # The effective weight has at least those zeros (and exactly, pretrained weights being nonzero).
    assert M.weight_sparsity(model) == pytest.approx(sparsity, abs=1 / 2048)


def test_per_block_sparsity_list():
    model = small_model()
    M.add_masks(model, sparsity=[0.1, 0.5, 0.0], scope="ffn")
    got = M.mask_sparsity(model)
    assert got["encoder.layers.1.feed_forward.output_dense"] == pytest.approx(0.5)
    assert got["encoder.layers.2.feed_forward.output_dense"] == 0.0
    with pytest.raises(ValueError, match="one per masked block"):
        M.add_masks(small_model(), sparsity=[0.1, 0.2])


def test_topk_mask_is_exact_with_ties():
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.0], [2.0, 0.0, 1.0, 1.0]])
    for k in range(9):
        mask = M.topk_mask(scores, k)
        assert mask.sum() == k
        if 0 < k < 8:  # no kept score is below a dropped one
            assert scores[mask.bool()].min() >= scores[~mask.bool()].max()


def test_frozen_weights_bitwise_unchanged_and_masks_move():
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    M.add_masks(model, sparsity=0.1, init="ori", scope="both")
    masks_before = M.binary_masks(model)
    train_scores(model, steps=5)
    M.fold(copy.deepcopy(model))  # folding a copy leaves the original alone
    state = model.state_dict()
    for key, value in before.items():
        stored = state.get(key.replace(".weight", ".parametrizations.weight.original"), state.get(key))
        assert torch.equal(stored, value), key
    moved = sum(int((a != b).sum()) for a, b in zip(masks_before.values(),
                                                    M.binary_masks(model).values()))
    assert moved > 0


def test_scores_get_the_straight_through_gradient():
    linear = torch.nn.Linear(6, 4)
    weight = linear.weight.detach().clone()
    scores = torch.randn(4, 6)
    mask_param = M.LearnedMask(scores.clone(), sparsity=0.5)
    torch.nn.utils.parametrize.register_parametrization(linear, "weight", mask_param)
    x = torch.randn(3, 6)
    linear(x).pow(2).sum().backward()
    # Reference: the binary mask as a leaf; dL/dscores must equal dL/dmask.
    mask = M.topk_mask(scores, 12).requires_grad_(True)
    torch.nn.functional.linear(x, weight * mask, linear.bias).pow(2).sum().backward()
    assert torch.allclose(mask_param.scores.grad, mask.grad)
    assert mask_param.scores.grad.abs().sum() > 0
    assert (mask_param.scores.grad[mask.detach() == 0] != 0).any()  # dropped weights learn too


def test_ori_ranks_follow_weight_magnitude_ranks():
    model = small_model()
    M.add_masks(model, init="ori", scope="both")
    for linear in M.masked_linears(model).values():
        scores = linear.parametrizations.weight[0].scores.detach().reshape(-1)
        magnitude = linear.parametrizations.weight.original.abs().reshape(-1)
        assert torch.equal(scores.argsort(), magnitude.argsort())
    ri = small_model()
    M.add_masks(ri, init="ri", scope="ffn")
    linear = next(iter(M.masked_linears(ri).values()))
    ranks_ri = linear.parametrizations.weight[0].scores.detach().reshape(-1).argsort()
    assert not torch.equal(ranks_ri, linear.parametrizations.weight.original.abs().reshape(-1).argsort())


def test_fold_equals_masked_forward_and_saves_as_plain_hf_model(tmp_path):
    model = small_model()
    M.add_masks(model, sparsity=0.3, init="ri", scope="both")
    train_scores(model)
    x = audio()
    with torch.no_grad():
        masked = model(x).last_hidden_state
        M.fold(model)
        folded = model(x).last_hidden_state
    assert not M.masked_linears(model)
    assert torch.allclose(masked, folded, atol=1e-6)
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(x).last_hidden_state, masked, atol=1e-6)
    assert set(reloaded.state_dict()) == set(small_model().state_dict())


@pytest.mark.parametrize("shape", [(3, 5), (64, 32), (1, 1), (7, 9, 3)])
def test_pack_unpack_round_trips(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.4
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-mask.numel() // 8)
    assert torch.equal(unpack_mask(packed, shape), mask)


def task_model(seed):
    model = small_model(seed=0)  # every task shares the backbone weights
    M.add_masks(model, sparsity=0.2, init="ri", scope="ffn", seed=seed)
    return train_scores(model, steps=3, seed=seed)


def test_bank_switches_tasks_like_single_task_models(tmp_path):
    models = {name: task_model(seed) for name, seed in (("A", 10), ("B", 20))}
    heads = {}
    for name, model in models.items():
        heads[name] = torch.nn.Linear(32, 7)
        size = save_mask(tmp_path / f"{name}.safetensors", model, head=heads[name], task=name)
        mask_bits = sum(m.numel() for m in M.binary_masks(model).values())
        assert size < mask_bits / 8 + 32 * 7 * 4 + 7 * 4 + 4096  # 1 bit per masked weight
    backbone = small_model(seed=0)
    bank = MaskBank(backbone)
    for name in models:
        bank.load_adapter(tmp_path / f"{name}.safetensors", adapter_name=name,
                          head=torch.nn.Linear(32, 7))
    assert bank.adapters == ["A", "B"] and bank.active_adapter is None
    assert bank.info["A"] == {"task": "A"}
    x = audio()
    with torch.no_grad():
        reference = {name: heads[name](m(x).last_hidden_state) for name, m in models.items()}
        assert not torch.allclose(reference["A"], reference["B"])
        for name in ("B", "A", "B"):
            head = bank.set_adapter(name)
            assert bank.active_adapter == name
            assert torch.allclose(head(backbone(x).last_hidden_state), reference[name], atol=1e-6)


@pytest.mark.parametrize("task", ["A", "B"])
def test_merge_and_unload_equals_the_masked_forward_of_the_active_task(tmp_path, task):
    for name, seed in (("A", 10), ("B", 20)):
        save_mask(tmp_path / f"{name}.safetensors", task_model(seed))
    backbone = small_model(seed=0)
    bank = MaskBank(backbone)
    for name in ("A", "B"):
        bank.load_adapter(tmp_path / f"{name}.safetensors", name)
    with pytest.raises(MaskBankError, match="set_adapter first"):
        bank.merge_and_unload()
    bank.set_adapter(task)
    x = audio()
    with torch.no_grad():
        masked = backbone(x).last_hidden_state
        plain = bank.merge_and_unload()
        assert plain is backbone and not M.masked_linears(plain)
        assert set(plain.state_dict()) == set(small_model(seed=0).state_dict())
        assert torch.allclose(plain(x).last_hidden_state, masked, atol=1e-6)
    with pytest.raises(MaskBankError, match="merged"):
        bank.set_adapter("A")


def test_bank_refuses_other_backbones_and_damaged_files(tmp_path):
    path = tmp_path / "A.safetensors"
    save_mask(path, task_model(1))
    with pytest.raises(MaskBankError, match="another backbone"):
        MaskBank(small_model(seed=5)).load_adapter(path, "A")
    other_shape = AutoModel.from_config(Wav2Vec2Config(**{**SMALL, "intermediate_size": 48}))
    with pytest.raises(MaskBankError):
        MaskBank(other_shape).load_adapter(path, "A")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits in the payload
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(data))
    with pytest.raises(MaskBankError, match="damaged"):
        MaskBank(small_model(seed=0)).load_adapter(damaged, "A")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(bytes(data[:100]))
    with pytest.raises(MaskBankError, match="not a readable"):
        MaskBank(small_model(seed=0)).load_adapter(truncated, "A")
    with pytest.raises(KeyError, match="no task"):
        bank = MaskBank(small_model(seed=0))
        bank.load_adapter(path, "A")
        bank.set_adapter("B")


def test_omp_pruned_weights_stay_zero_while_the_rest_trains():
    model = small_model()
    OneShotMagnitudePruning(0.5, scope="both").setup(model)
    before = {n: m.weight.detach().clone() for n, m in M.masked_linears(model).items()}
    for p in model.parameters():
        p.requires_grad_(True)
    train_scores(model, steps=3, lr=0.01)
    for name, linear in M.masked_linears(model).items():
        weight = linear.weight.detach()
        assert torch.equal(weight == 0, before[name] == 0), name
        assert not torch.equal(weight, before[name])
    assert M.weight_sparsity(model) == pytest.approx(0.5, abs=1e-3)


def test_imp_reaches_the_target_in_rounds_with_nested_masks():
    model = small_model()
    imp = IterativeMagnitudePruning(0.6, rounds=3, interval_steps=10, scope="ffn")
    imp.setup(model)
    levels, previous = [], M.binary_masks(model)
    for step in (5, 10, 15, 20, 30):
        imp.on_step(model, step)
        current = M.binary_masks(model)
        assert all(not (c & ~p).any() for c, p in zip(current.values(), previous.values()))
        previous = current
        levels.append(round(M.weight_sparsity(model, scope="ffn"), 3))
    assert levels == sorted(levels) and levels[-1] == pytest.approx(0.6, abs=1e-3)
    assert levels[0] == pytest.approx(1 - 0.4 ** (1 / 3), abs=1e-3)
    # Checkpoints count as final only once the last round is done (step 20).
    assert not imp.at_target(19) and imp.at_target(20)


def test_parp_lets_pruned_weights_grow_back_then_reprunes():
    model = small_model()
    parp = PruneAdjustReprune(0.5, interval_steps=3, scope="both")
    parp.setup(model)
    assert M.weight_sparsity(model) == pytest.approx(0.5, abs=1e-3)
    for p in model.parameters():
        p.requires_grad_(True)
    train_scores(model, steps=2, lr=0.01)
    assert M.weight_sparsity(model) < 0.1  # zeroed weights were updated (adjust)
    parp.on_step(model, 2)
    assert M.weight_sparsity(model) < 0.1  # not an interval step
    parp.on_step(model, 3)
    assert M.weight_sparsity(model) == pytest.approx(0.5, abs=1e-3)


def test_folding_a_copy_leaves_the_original_masked():
    """A deployment folds the masks of a deep copy; the run's own model (whose parametrized
    class the copy shares) must keep its masks and weights."""
    import copy

    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from s3brain.strategies.s3router.masks import add_masks, fold, masked_linears

    model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64,
                                         conv_dim=(8,), conv_stride=(5,), conv_kernel=(10,),
                                         num_feat_extract_layers=1))
    add_masks(model, sparsity=0.5)
    masked = model.encoder.layers[0].feed_forward.output_dense.weight.clone()
    folded = fold(copy.deepcopy(model))
    assert not masked_linears(folded) and len(masked_linears(model)) == 2
    assert torch.equal(model.encoder.layers[0].feed_forward.output_dense.weight, masked)
    assert torch.equal(folded.encoder.layers[0].feed_forward.output_dense.weight, masked)


@pytest.mark.parametrize("sparsity", ["abc", 1.5, -0.1, [0.1, "x"], []])
def test_a_sparsity_that_is_not_a_share_is_refused_in_one_line(sparsity):
    from s3brain.strategies import Masks

    with pytest.raises(ValueError, match=r"^sparsity=.*: a share of each layer's weights"):
        Masks(sparsity=sparsity)
