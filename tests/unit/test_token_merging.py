"""Token merging (``s3brain.strategies.token_merging.merging``): the merging step against a reference computation
(each merged token is the mean of the frames it holds, runs of adjacent frames, no padding), the
strategy on every family and layout (a merge ratio of 0 is the plain forward; with merging, an
utterance in a padded batch gives what it gives alone), kept share, frames and FLOPs."""

import pytest
import torch
from conftest import FAMILY_LAYOUTS

from s3brain.backbone.families import Frames, feature_frames_and_mask, run_blocks
from s3brain.backbone.tiny_models import tiny_model
from s3brain.backbone.wrapper import feature_frames, load_ssl, wrapper_forward
from s3brain.strategies.token_merging.base import merge_counts, merge_ratio_for, nominal_kept_share
from s3brain.strategies.token_merging.merging import (
    MergedTokensBackbone,
    TokenMerging,
    encode_with_merging,
    merge_adjacent,
    merged_blocks,
    start_tokens,
    unmerge,
)
from s3brain.utils.efficiency import count_flops

IDS = [f"{family}-{layout}" for family, layout in FAMILY_LAYOUTS]


def _random(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _check_runs(original, lengths, tokens):
    """Every real token holds a run of adjacent real frames, in order, and is their mean."""
    for b, length in enumerate(lengths.tolist()):
        owner = tokens.frame_token[b, :length].tolist()
        new_length = int(tokens.lengths[b])
        assert owner[0] == 0 and owner[-1] == new_length - 1
        # consecutive frames are in the same token or the next: runs, order kept
        assert all(step in (0, 1) for step in (torch.tensor(owner).diff().tolist()))
        for token in range(new_length):
            frames = [i for i, o in enumerate(owner) if o == token]
            assert tokens.sizes[b, token] == len(frames)
            mean = original[b, frames].double().mean(0)
            assert torch.allclose(tokens.hidden[b, token].double(), mean, atol=1e-5)
            centre = sum(frames) / len(frames)
            assert tokens.centres[b, token].item() == pytest.approx(centre)
        # nothing of the padding: sizes add up to the real frames, padded tokens are empty
        assert tokens.sizes[b, :new_length].sum() == length
        assert (tokens.sizes[b, new_length:] == 0).all()
        assert (tokens.hidden[b, new_length:] == 0).all()


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.9])
def test_merging_joins_only_adjacent_real_frames_into_their_mean(ratio):
    lengths = torch.tensor([40, 33, 7, 1])
    hidden = _random(4, 40, 6) * (torch.arange(40)[None, :, None] < lengths[:, None, None])
    tokens = start_tokens(hidden, lengths)
    for _ in range(3):  # steps compose: the weights are the frames already held
        counts = merge_counts(tokens.lengths, ratio)
        before = tokens.lengths.clone()
        tokens = merge_adjacent(tokens, counts)
        assert tokens.lengths.tolist() == (before - counts).tolist()
        assert tokens.hidden.shape[1] == int(tokens.lengths.max())
        _check_runs(hidden, lengths, tokens)


def test_the_most_similar_pairs_merge_and_never_with_the_padding():
    # frames 0-1 nearly the same, 2-3 the same direction; frame 4 is the last real one and
    # the padding after it has the same direction (the most similar pair, which must not merge)
    hidden = torch.tensor([[[1.0, 0.0], [1.0, 0.05], [0.0, 1.0], [0.0, 2.0], [-1.0, 0.3],
                            [-1.0, 0.3], [-1.0, 0.3]]])
    tokens = start_tokens(hidden, torch.tensor([5]))._replace(hidden=hidden)
    merged = merge_adjacent(tokens, torch.tensor([2]))
    assert merged.frame_token[0, :5].tolist() == [0, 0, 1, 1, 2]
    assert merged.lengths.tolist() == [3]
    one = merge_adjacent(tokens, torch.tensor([1]))  # the single most similar pair: 2-3
    assert one.frame_token[0, :5].tolist() == [0, 1, 2, 2, 3]
    everything = merge_adjacent(tokens, merge_counts(torch.tensor([5]), 0.99))
    assert everything.lengths.tolist() == [1] and everything.sizes.tolist() == [[5.0]]


def test_weighted_average_on_a_hand_example():
    hidden = torch.tensor([[[2.0, 0.0], [4.0, 0.0], [0.0, 8.0], [0.0, 4.0]]])
    tokens = start_tokens(hidden, torch.tensor([4]))._replace(
        sizes=torch.tensor([[3.0, 1.0, 2.0, 2.0]]), centres=torch.tensor([[1.0, 3.0, 4.5, 6.5]]))
    merged = merge_adjacent(tokens, torch.tensor([2]))  # pairs 0-1 and 2-3 (cosine 1)
    assert merged.hidden.tolist() == [[[2.5, 0.0], [0.0, 6.0]]]  # (3x2 + 1x4) / 4, (2x8 + 2x4) / 4
    assert merged.sizes.tolist() == [[4.0, 4.0]]
    assert merged.centres.tolist() == [[1.5, 5.5]]  # (3x1 + 1x3) / 4, (2x4.5 + 2x6.5) / 4
    assert unmerge(merged.hidden, torch.tensor([[0, 0, 0, 1]])).tolist() == [
        [[2.5, 0.0], [2.5, 0.0], [2.5, 0.0], [0.0, 6.0]]]


def test_merging_passes_gradients_to_every_frame():
    hidden = _random(1, 6, 3, seed=1).requires_grad_(True)
    tokens = start_tokens(hidden, torch.tensor([6]))
    merged = merge_adjacent(tokens, torch.tensor([3]))
    unmerge(merged.hidden, merged.frame_token).sum().backward()
    # each frame's gradient is its token's frames over the token's size: 1 when unmerged back
    assert torch.allclose(hidden.grad, torch.ones_like(hidden))


def test_schedule_shares():
    assert nominal_kept_share(4, [0, 1, 2], 0.0) == 1.0
    assert nominal_kept_share(4, [0], 0.5) == pytest.approx((1 + 3 * 0.5) / 4)
    ratio = merge_ratio_for(0.64, 4, [0, 1, 2])
    assert nominal_kept_share(4, [0, 1, 2], ratio) == pytest.approx(0.64, abs=1e-9)
    with pytest.raises(ValueError, match="out of reach"):
        merge_ratio_for(0.2, 4, [2])
    assert merge_counts(torch.tensor([100, 3, 1]), 0.999).tolist() == [99, 2, 0]


@pytest.fixture(params=FAMILY_LAYOUTS, ids=IDS)
def folder(request, tiny_family_models):
    return tiny_family_models[request.param]


def _padded(samples=(16000, 9000), seed=2):
    wavs = _random(len(samples), max(samples), seed=seed)
    for b, n in enumerate(samples):
        wavs[b, n:] = 0
    return wavs, torch.tensor(samples, dtype=torch.float) / max(samples)


def test_merge_ratio_zero_is_the_plain_forward(folder, tmp_path):
    ssl = load_ssl(folder, tmp_path, output_norm=True).eval()
    wavs, wav_lens = _padded()
    strategy = TokenMerging(merge_ratio=0.0, merge_after=[0])
    strategy.setup(ssl, {})
    with torch.no_grad():
        feats, lens = strategy.encode(ssl, wavs, wav_lens, None)
        samples = (wav_lens * wavs.shape[1]).round().long()
        wav = torch.nn.functional.layer_norm(wavs, wavs.shape[1:]) if ssl.normalize_wav else wavs
        frames = feature_frames_and_mask(ssl.model, wav, samples)
        opened = run_blocks(ssl.model, frames.hidden, frames.mask)
        opened = torch.nn.functional.layer_norm(opened, opened.shape[1:])  # output_norm
        theirs = wrapper_forward(ssl, wavs, wav_lens)
    assert torch.equal(feats, opened)  # the opened-up forward, bit for bit
    assert feats.shape == theirs.shape and torch.allclose(feats, theirs, atol=1e-5)
    assert lens is wav_lens
    assert strategy.stage_stats(None) == {"kept_share": 1.0}


def test_a_padded_utterance_merges_as_it_does_alone(folder):
    """Masks and (WavLM) position bias follow the merged tokens: the padding changes nothing
    that it does not change in the plain forward (data2vec-audio's positional convolutions
    let the padding reach the last real frames even there)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    width, short = 60, 41
    hidden = _random(2, width, model.config.hidden_size, seed=3)
    lengths = torch.tensor([width, short])
    mask = torch.arange(width)[None, :] < lengths[:, None]

    def batch_and_alone(ratio):
        with torch.no_grad():
            batch = merged_blocks(model, Frames(hidden, mask, lengths, None), [0], ratio)
            alone = [merged_blocks(model, Frames(hidden[b:b + 1, :n], None, None, None), [0],
                                   ratio) for b, n in enumerate(lengths.tolist())]
        return batch, alone

    plain_batch, plain_alone = batch_and_alone(0.0)
    padding_effect = (plain_batch.hidden[1, :short] - plain_alone[1].hidden[0]).abs().max()
    batch, alone = batch_and_alone(0.4)
    assert batch.tokens.lengths.tolist() == [width - 24, short - 16]
    assert batch.tokens_per_block == [width + short, width - 24 + short - 16]
    assert torch.equal(batch.tokens.frame_token[1, :short], alone[1].tokens.frame_token[0])
    difference = (batch.hidden[1, :short] - alone[1].hidden[0]).abs().max()
    assert difference <= max(1e-5, 1.5 * float(padding_effect))
    assert torch.allclose(batch.hidden[0], alone[0].hidden[0], atol=1e-5)
    # and merging changed the output (the test could fail)
    assert not torch.allclose(alone[0].hidden, plain_alone[0].hidden, atol=1e-3)


def test_frames_lengths_and_kept_share_of_the_strategy(folder, tmp_path):
    ssl = load_ssl(folder, tmp_path).eval()
    blocks = ssl.model.config.num_hidden_layers  # 2: merging after block 0 only
    strategy = TokenMerging(merge_ratio=0.3, merge_after=[0])
    strategy.setup(ssl, {})
    wavs, wav_lens = _padded((16000, 9000, 4000))
    with torch.no_grad():
        feats, lens = strategy.encode(ssl, wavs, wav_lens, None)
    frames = [feature_frames(ssl.model, n) for n in (16000, 9000, 4000)]
    assert feats.shape[:2] == (3, frames[0]) and lens is wav_lens
    assert strategy.output_frames(ssl.model, 9000) == frames[1]
    after = [n - int(0.3 * n) for n in frames]
    expected = (sum(frames) + sum(after)) / (blocks * sum(frames))
    assert strategy.stage_stats(None)["kept_share"] == round(expected, 4)
    assert abs(expected - strategy.nominal_kept_share(blocks)) < 0.01
    strategy.stage_start(None)
    assert strategy.stage_stats(None) == {}


def test_training_with_layerdrop_and_gradients(folder, tmp_path):
    ssl = load_ssl(folder, tmp_path).train()
    ssl.model.config.layerdrop = 0.5
    strategy = TokenMerging(merge_ratio=0.5, merge_after=[0])
    wavs, wav_lens = _padded()
    for seed in range(4):  # some draws drop the block after the merge point, or both
        torch.manual_seed(seed)
        feats, _ = strategy.encode(ssl, wavs, wav_lens, None)
        feats.sum().backward()
    grads = [p.grad for p in ssl.model.encoder.layers[0].parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_merge_points_must_be_before_the_last_block():
    model = tiny_model("wav2vec2", "base")  # 2 blocks
    with pytest.raises(ValueError, match="tokens go after blocks 0 to 0"):
        TokenMerging(0.3, merge_after=[1]).setup(model, {})
    with pytest.raises(ValueError, match="merge_ratio"):
        TokenMerging(1.0)


class _Wrapper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.normalize_wav, self.output_norm = False, False

    def forward(self, wavs, wav_lens=None):
        return wrapper_forward(self, wavs, wav_lens)


def test_deployed_flops_drop_with_the_merged_tokens():
    model = tiny_model("wav2vec2", "base").eval()
    wrapper = _Wrapper(model)
    wav = _random(1, 16000 * 4, seed=4)
    with torch.no_grad():
        dense = count_flops(wrapper, wav)
        same = count_flops(MergedTokensBackbone(wrapper, [0], 0.0), wav)
        merged = count_flops(MergedTokensBackbone(wrapper, [0], 0.5), wav)
        out = encode_with_merging(wrapper, wav, None, [0], 0.5)[1]
    assert same == dense
    # the second block sees half the tokens: its share of the cost about halves
    block = count_flops(lambda x: model.encoder.layers[1](x)[0], torch.zeros(1, 199, 32))
    half = count_flops(lambda x: model.encoder.layers[1](x)[0], torch.zeros(1, 100, 32))
    assert out.tokens_per_block == [199, 100]
    assert dense - merged >= block - half - 5 * 199 * 32  # the merge itself costs a little
    assert merged < dense
