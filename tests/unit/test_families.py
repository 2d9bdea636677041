"""Every mechanism on every backbone family and layout (issue #15, item 2).

Tiny random-init models of wav2vec2, HuBERT and WavLM in the base layout (group-norm CNN, post-LN
transformer) and the large layout (layer-norm CNN, stable layer norm), and data2vec-audio (one
layout in transformers), written with ``save_pretrained`` as a downloaded hub folder is
(``conftest.tiny_family_models``). Each mechanism is compared with a reference computation on
each (the debug recipe runs that cover the recipe-level paths that once failed:
``tests/integration/test_family_recipes.py``).
"""

import pytest
import torch
from conftest import FAMILY_LAYOUTS
from transformers import AutoModel

from s3brain.backbone.families import (
    block_outputs,
    feature_frames_and_mask,
    final_layer_norm,
    is_stable_layer_norm,
    iter_blocks,
    run_blocks,
)
from s3brain.backbone.wrapper import hidden_layer_count, load_ssl, wrapper_forward
from s3brain.lobes.heads import UtteranceHead
from s3brain.strategies.adapters import HoulsbyAdapters as Adapters
from s3brain.strategies.downsampling import InputDownsampling
from s3brain.strategies.early_exit import ExitHeads, early_exit, exit_inputs, layer_outputs
from s3brain.strategies.pruning.structured import Safari, save_shrunk, shrink
from s3brain.strategies.s3router.masks import add_masks, fold
from s3brain.strategies.token_dropping import forward_with_dropping

IDS = [f"{family}-{layout}" for family, layout in FAMILY_LAYOUTS]
#: the SpecAugment overrides of the LibriSpeech and CommonVoice yamls (feature masking made
#: likely, so that its code path runs)
SPEC_AUGMENT = {"mask_time_prob": 0.05, "mask_time_length": 5, "mask_feature_prob": 0.5,
                "mask_feature_length": 8}


@pytest.fixture(params=FAMILY_LAYOUTS, ids=IDS)
def folder(request, tiny_family_models):
    return tiny_family_models[request.param]


def _model(folder):
    return AutoModel.from_pretrained(folder, local_files_only=True).eval()


def _wav(batch=1, samples=8000, seed=0):
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def _as_wrapper_sees(ssl, wav):
    """The waveform the SpeechBrain wrapper gives its model (normalised when the preprocessor
    config says ``do_normalize``, as the large checkpoints' do)."""
    return torch.nn.functional.layer_norm(wav, wav.shape[1:]) if ssl.normalize_wav else wav


def _close(a, b, atol=1e-5):
    return a.shape == b.shape and torch.allclose(a, b, atol=atol)


def test_family_and_layout_are_what_was_written(folder):
    model = _model(folder)
    family, layout = folder.name.rsplit("-", 1)
    assert model.config.model_type == family
    assert is_stable_layer_norm(model) == (layout == "large")


def test_load_ssl_every_layer_spec_augment_and_learned_downsampling(folder, tmp_path):
    torch.manual_seed(0)
    ssl = load_ssl(folder, tmp_path, config_overrides=SPEC_AUGMENT, output_all_hiddens=True,
                   freeze_feature_extractor=True, apply_spec_augment=True)
    layers = ssl.model.config.num_hidden_layers + 1
    assert ssl.model.config.layerdrop == 0.0  # a dropped block would be missing
    assert hidden_layer_count(ssl) == layers
    down = InputDownsampling("conv", factor=2)
    ssl.train()
    for _ in range(3):  # training mode: SpecAugment (WavLM's config lacks a key it reads)
        out = ssl(down(_wav(2)), torch.tensor([1.0, 0.7]))
        assert out.shape[0] == layers
    head = UtteranceHead(layers, ssl.model.config.hidden_size, {"label": 3}, projection=8)
    head(out, torch.tensor([1.0, 0.7]))["label"].sum().backward()  # through a computed input
    assert all(p.grad is not None for p in down.parameters())
    ssl.eval()
    with torch.no_grad():
        hiddens = ssl(_wav())
        last = ssl.model(_as_wrapper_sees(ssl, _wav())).last_hidden_state
    assert torch.equal(hiddens[-1], last)  # the last hidden state is the model's output
    with pytest.raises(ValueError, match="not attributes"):
        load_ssl(folder, tmp_path, config_overrides={"mask_time_probability": 0.1})


def test_masks_at_sparsity_zero_and_fold(folder):
    model = _model(folder)
    wav = _wav()
    with torch.no_grad():
        dense = model(wav).last_hidden_state
        add_masks(model, sparsity=0.0, scope="both")
        assert _close(model(wav).last_hidden_state, dense)
    model = _model(folder)
    add_masks(model, sparsity=0.5, scope="both")
    with torch.no_grad():
        masked = model(wav).last_hidden_state
        assert not _close(masked, dense, atol=1e-3)
        assert _close(fold(model)(wav).last_hidden_state, masked)


def test_structured_pruning_shrinks_and_loads_back(folder, tmp_path):
    model = _model(folder)
    Safari(sparsity=0.3).setup(model)
    wav = _wav(2, seed=1)
    mask = torch.ones(2, wav.shape[1], dtype=torch.long)
    mask[1, 5000:] = 0  # padding: the attention mask path too
    with torch.no_grad():
        masked = model(wav, attention_mask=mask).last_hidden_state
        shrunk = shrink(model)
        assert _close(shrunk(wav, attention_mask=mask).last_hidden_state, masked)
    assert sum(shrunk.config.layer_attention_heads) < 2 * 4
    assert sum(shrunk.config.layer_intermediate_sizes) < 2 * 64
    save_shrunk(shrunk, tmp_path / "shrunk")
    loaded = AutoModel.from_pretrained(tmp_path / "shrunk", trust_remote_code=True,
                                       local_files_only=True).eval()
    with torch.no_grad():
        assert _close(loaded(wav, attention_mask=mask).last_hidden_state, masked)


def test_early_exit_matches_the_full_forward_and_the_training_path(folder, tmp_path):
    ssl = load_ssl(folder, tmp_path, output_all_hiddens=True).eval()
    model = ssl.model
    with torch.no_grad():
        hiddens = ssl(_wav())
        wav = _as_wrapper_sees(ssl, _wav())
        outputs = [after for _, after in layer_outputs(model, wav)]
        full = model(wav).last_hidden_state
    assert len(outputs) == model.config.num_hidden_layers
    assert _close(outputs[-1], full)
    heads = ExitHeads(model.config.hidden_size, outputs=5, layers=len(outputs) - 1)
    # what the exit heads are trained on is what they read when decoding
    for trained, decoded in zip(exit_inputs(ssl, hiddens, heads), outputs[:-1]):
        assert _close(trained, decoded)
    last_head = torch.nn.Linear(model.config.hidden_size, 5)

    def head_fn(i, hidden):
        return last_head(hidden) if i == len(outputs) else heads[i - 1](hidden)

    log_probs, block = early_exit(model, heads, wav, "entropy", 0.0, head_fn=head_fn)
    assert block == len(outputs)
    assert _close(log_probs, last_head(full).log_softmax(-1).detach())
    assert early_exit(model, heads, wav, "entropy", float("inf"), head_fn=head_fn)[1] == 1


def test_token_dropping_keeping_every_frame_is_the_plain_forward(folder):
    model = _model(folder)
    wav = _wav(2, seed=2)
    lengths = torch.tensor([wav.shape[1]] * 2)

    def keep_all(features, frames):
        return torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)

    with torch.no_grad():
        plain = model(wav).last_hidden_state
        hidden, kept, keep, blocks = forward_with_dropping(model, wav, lengths, keep_all,
                                                           output_hidden_states=True)
    assert _close(hidden, plain) and kept.tolist() == [plain.shape[1]] * 2
    assert len(blocks) == model.config.num_hidden_layers


def _padded_batch(seed=3):
    """Two utterances of different lengths, the second zero-padded, and its sample mask."""
    wav = _wav(2, seed=seed)
    mask = torch.ones(2, wav.shape[1], dtype=torch.long)
    mask[1, 5000:] = 0
    return wav * mask, mask


def test_opened_up_forward_is_the_models_forward_with_padding(folder):
    model = _model(folder)
    wav, mask = _padded_batch()
    with torch.no_grad():
        theirs = model(wav, attention_mask=mask, output_hidden_states=True)
        frames = feature_frames_and_mask(model, wav, mask.sum(1))
        pairs = list(iter_blocks(model, frames.hidden, frames.mask))
        last, blocks = run_blocks(model, frames.hidden, frames.mask, every_block=True)
        exits = [after for _, after in layer_outputs(model, wav, mask.sum(1))]
    assert torch.equal(frames.mask, model._get_feature_vector_attention_mask(
        frames.hidden.shape[1], mask))
    assert frames.keep is None
    blocks_count = model.config.num_hidden_layers
    assert len(pairs) == len(blocks) == len(exits) == blocks_count
    assert len(theirs.hidden_states) == blocks_count + 1
    # hidden_states: the first block's input, then every block's output (the last one before
    # the large layout's final layer norm); every frame, padding included
    mine = [pairs[0][0]] + [after for _, after in pairs]
    for i, (a, b) in enumerate(zip(mine[:-1], theirs.hidden_states[:-1])):
        assert _close(a, b), f"hidden state {i}"
    for (before, _), previous in zip(pairs[1:], mine[1:]):
        assert torch.equal(before, previous)  # a block's input is the previous block's output
    assert all(torch.equal(a, b) for a, b in zip(blocks, mine[1:]))
    assert _close(last, theirs.last_hidden_state)
    assert torch.equal(last, final_layer_norm(model, blocks[-1]))
    assert _close(exits[-1], theirs.last_hidden_state)
    if not is_stable_layer_norm(model):
        assert _close(mine[-1], theirs.hidden_states[-1])


def test_opened_up_forward_keeping_every_frame_is_the_plain_forward_with_padding(folder):
    model = _model(folder)
    wav, mask = _padded_batch(seed=4)

    def keep_all(features, frames):
        return torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)

    with torch.no_grad():
        theirs = model(wav, attention_mask=mask, output_hidden_states=True)
        frames = feature_frames_and_mask(model, wav, mask.sum(1), keep_fn=keep_all)
        last, blocks = run_blocks(model, frames.hidden, frames.mask, every_block=True)
        hidden, kept, keep, dropped_blocks = forward_with_dropping(
            model, wav, mask.sum(1), keep_all, output_hidden_states=True)
    lengths = model._get_feat_extract_output_lengths(mask.sum(1))
    assert frames.lengths.tolist() == kept.tolist() == lengths.tolist()
    assert keep.sum(1).tolist() == lengths.tolist() and not keep[1, int(lengths[1]):].any()
    assert _close(last, theirs.last_hidden_state) and torch.equal(last, hidden)
    for mine, reference in zip(blocks[:-1], theirs.hidden_states[1:-1]):
        assert _close(mine, reference)
    assert all(torch.equal(a, b) for a, b in zip(blocks, dropped_blocks))


def test_opened_up_forward_in_training_draws_as_the_model_does(folder):
    """Dropout, SpecAugment and LayerDrop in training: with the same seeds, keeping every frame
    gives the model's own output and the same blocks (those LayerDrop keeps)."""
    import numpy

    model = _model(folder).train()
    for key, value in SPEC_AUGMENT.items():
        setattr(model.config, key, value)
    if not hasattr(model.config, "mask_feature_min_masks"):
        model.config.mask_feature_min_masks = 0  # as s3brain.backbone.configure sets it
    if model.config.model_type == "hubert":
        # HubertModel draws its time masks over the padding too; token dropping (as the other
        # families' own forwards) over the real frames only
        model.config.mask_time_prob = 0.0
    model.config.layerdrop = 0.5
    wav, mask = _padded_batch(seed=6)

    def keep_all(features, frames):
        return torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)

    blocks_run = set()
    for seed in range(8):
        torch.manual_seed(seed)
        numpy.random.seed(seed)  # SpecAugment draws with numpy
        with block_outputs(model) as theirs_blocks:
            theirs = model(wav, attention_mask=mask).last_hidden_state
        torch.manual_seed(seed)
        numpy.random.seed(seed)
        hidden, _, _, blocks = forward_with_dropping(model, wav, mask.sum(1), keep_all,
                                                     output_hidden_states=True)
        assert len(blocks) == len(theirs_blocks)
        assert _close(hidden, theirs)
        assert all(_close(a, b) for a, b in zip(blocks, theirs_blocks))
        blocks_run.add(len(blocks))
    assert len(blocks_run) > 1  # LayerDrop dropped a block in some runs, not in others


def test_wrapper_forward_is_the_wrappers_forward(folder, tmp_path):
    for every_layer in (False, True):
        ssl = load_ssl(folder, tmp_path, output_norm=True, output_all_hiddens=every_layer).eval()
        wav = _wav(2, seed=5)
        wav_lens = torch.tensor([1.0, 0.6])
        with torch.no_grad():
            reference = ssl(wav, wav_lens)
            assert torch.equal(wrapper_forward(ssl, wav, wav_lens), reference)
            assert _close(wrapper_forward(ssl, wav, wav_lens, traceable=True), reference, 1e-4)


def test_adapters_at_initialisation_leave_the_output_unchanged(folder):
    model = _model(folder)
    wav = _wav()
    with torch.no_grad():
        before = model(wav).last_hidden_state
        adapters = Adapters(model, bottleneck=4)
        assert torch.equal(model(wav).last_hidden_state, before)
    # the adapters sit inside the model (SpeechBrain's AdaptedModel): they alone train
    assert {id(p) for p in model.parameters() if p.requires_grad} == \
        {id(p) for p in adapters.parameters()}


def test_a_family_without_a_layer_table_is_refused_at_load(tmp_path):
    from transformers import UniSpeechConfig, UniSpeechModel, Wav2Vec2FeatureExtractor

    UniSpeechModel(UniSpeechConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                   intermediate_size=64, conv_dim=(16,) * 7,
                                   num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
                   ).save_pretrained(tmp_path / "unispeech")
    Wav2Vec2FeatureExtractor().save_pretrained(tmp_path / "unispeech")
    with pytest.raises(ValueError, match="no layer table for model type 'unispeech'"):
        load_ssl(tmp_path / "unispeech", tmp_path / "save")
