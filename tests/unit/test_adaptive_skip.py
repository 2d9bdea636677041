"""Adaptive skip (``s3brain.strategies.token_merging.adaptive_skip``): what each token received and which tokens stay on
hand-made probabilities; on every family and layout, a skip ratio of 0 is the plain forward and
the scores are transformers' own attention probabilities (eager), summed over heads and real
queries; the cascade against a reference written here in plain torch; padding, kept counts,
gradients, FLOPs (the scoring products counted), the int8 deployment and the export's refusal."""

import pytest
import torch
from conftest import FAMILY_LAYOUTS
from transformers import AutoModel, Wav2Vec2Config, Wav2Vec2Model

from s3brain.backbone.families import Frames, feature_frames_and_mask
from s3brain.backbone.tiny_models import tiny_model
from s3brain.backbone.wrapper import feature_frames, load_ssl, wrapper_forward
from s3brain.strategies.token_merging.adaptive_skip import (
    AdaptiveSkip,
    SkippedTokensBackbone,
    attention_received,
    encode_with_skipping,
    forward_with_skipping,
    least_attended_keep,
    skip_counts,
    skipped_blocks,
)
from s3brain.utils.efficiency import count_flops

IDS = [f"{family}-{layout}" for family, layout in FAMILY_LAYOUTS]


def _random(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _padded(samples=(16000, 9000), seed=2):
    wavs = _random(len(samples), max(samples), seed=seed)
    for b, n in enumerate(samples):
        wavs[b, n:] = 0
    return wavs, torch.tensor(samples, dtype=torch.float) / max(samples)


def test_received_attention_and_kept_tokens_on_a_hand_made_case():
    # one utterance of 3 real tokens and 1 padded one, 2 heads
    probs = torch.zeros(1, 2, 4, 4)
    probs[0, 0, :3, :3] = torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    probs[0, 1, :3, :3] = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.75, 0.25], [0.5, 0.0, 0.5]])
    probs[0, :, 3] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # the padded query's row: never counted
    probs[0, :, 0, 3] = 5.0  # and anything a padded key column holds: never counted
    mask = torch.tensor([[True, True, True, False]])
    received = attention_received(probs, mask)
    assert received.tolist() == [[2.5, 1.5, 2.0, 0.0]]
    keep = least_attended_keep(received, torch.tensor([3]), torch.tensor([1]))
    assert keep.tolist() == [[True, False, True, False]]
    # the padding has the lowest score and is still neither removed nor kept
    keep = least_attended_keep(torch.tensor([[2.5, 1.5, 2.0, -9.0]]), torch.tensor([3]),
                               torch.tensor([2]))
    assert keep.tolist() == [[True, False, False, False]]
    # ties: the earlier token goes first; an utterance keeps at least one token
    counts = skip_counts(torch.tensor([4, 1, 10]), 0.999)
    assert counts.tolist() == [3, 0, 9]
    keep = least_attended_keep(torch.zeros(3, 10), torch.tensor([4, 1, 10]), counts)
    assert keep.sum(1).tolist() == [1, 1, 1]
    assert keep[0].tolist().index(True) == 3 and keep[1, 0] and keep[2, 9]


@pytest.fixture(params=FAMILY_LAYOUTS, ids=IDS)
def folder(request, tiny_family_models):
    return tiny_family_models[request.param]


def test_skip_ratio_zero_is_the_plain_forward(folder, tmp_path):
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    wav = _random(2, 12000, seed=5)
    with torch.no_grad():
        ours = forward_with_skipping(model, wav, None, [0], 0.0)
        theirs = model(wav).last_hidden_state
    assert ours.hidden.shape == theirs.shape
    assert torch.allclose(ours.hidden, theirs, atol=1e-5)
    assert ours.positions[0].tolist() == list(range(theirs.shape[1]))
    # through the strategy and the SpeechBrain wrapper, on a padded batch
    ssl = load_ssl(folder, tmp_path, output_norm=True).eval()
    strategy = AdaptiveSkip(skip_ratio=0.0, skip_after=[0])
    strategy.setup(ssl, {})
    wavs, wav_lens = _padded()
    with torch.no_grad():
        feats, lens = strategy.encode(ssl, wavs, wav_lens, None)
        plain = wrapper_forward(ssl, wavs, wav_lens)
    frames = [feature_frames(ssl.model, n) for n in (16000, 9000)]
    assert feats.shape == plain.shape and torch.allclose(feats, plain, atol=1e-5)
    assert (lens * feats.shape[1]).round().long().tolist() == frames
    assert strategy.stage_stats(None) == {"kept_share": 1.0}


def _eager_block_attention(folder, wav, mask):
    """transformers' own attention probabilities of every block (eager), ``[B, H, T, T]``."""
    model = AutoModel.from_pretrained(folder, local_files_only=True,
                                      attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(wav, attention_mask=mask, output_attentions=True)
    return out.attentions, out.last_hidden_state.shape[1]


def test_scores_are_the_attention_received_and_the_least_attended_go(folder):
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()  # the fused kernel
    samples = torch.tensor([16000, 9000])
    wav = _random(2, 16000, seed=6) * (torch.arange(16000)[None, :] < samples[:, None])
    wav_mask = (torch.arange(16000)[None, :] < samples[:, None]).long()
    attentions, width = _eager_block_attention(folder, wav, wav_mask)
    frames = feature_frames_and_mask(model, wav, samples)
    lengths = frames.lengths
    real = torch.arange(width)[None, :] < lengths[:, None]
    # the reference: block 0's probabilities summed over heads and the real query rows
    reference = (attentions[0].float() * real[:, None, :, None]).sum(dim=(1, 2)) * real
    with torch.no_grad():
        scored = skipped_blocks(model, frames, [0], 0.0 + 1e-9)  # scores, nothing removed
        skipped = skipped_blocks(model, frames, [0], 0.4)
    assert scored.lengths.tolist() == lengths.tolist()
    assert torch.allclose(scored.scores, reference, atol=1e-4)
    # every real query row adds 1 per head: the scores add up to heads x real tokens
    heads = model.config.num_attention_heads
    assert torch.allclose(scored.scores.sum(1), heads * lengths.float(), atol=1e-3)
    for b, n in enumerate(lengths.tolist()):
        drop = int(0.4 * n)
        least = set(reference[b, :n].argsort()[:drop].tolist())
        kept = skipped.positions[b, :n - drop].tolist()
        assert skipped.lengths[b] == n - drop
        assert kept == sorted(set(range(n)) - least)  # the rest, in order, no padding
        assert torch.allclose(skipped.scores[b, :n - drop], reference[b, kept], atol=1e-4)
    assert skipped.tokens_per_block == [int(lengths.sum()), int(skipped.lengths.sum())]


def _cascade_reference(model, wav, skip_after, ratio):
    """Adaptive skip written out in plain torch for one unpadded utterance of a wav2vec2 model:
    the encoder's steps, each block's softmax(QK^T / sqrt(d)) summed over heads and queries
    into the scores, and after each skip point the lowest-scored tokens removed."""
    encoder = model.encoder
    stable = model.config.do_stable_layer_norm
    x = feature_frames_and_mask(model, wav).hidden
    x = x + encoder.pos_conv_embed(x)
    if not stable:
        x = encoder.layer_norm(x)
    positions = torch.arange(x.shape[1])
    scores = torch.zeros(x.shape[1])
    heads = model.config.num_attention_heads
    for i, block in enumerate(encoder.layers):
        if i <= max(skip_after):
            attention_input = block.layer_norm(x) if stable else x
            q = block.attention.q_proj(attention_input)[0].view(x.shape[1], heads, -1)
            k = block.attention.k_proj(attention_input)[0].view(x.shape[1], heads, -1)
            logits = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
            scores = scores + logits.softmax(-1).sum(dim=(0, 1))
        x = block(x)
        x = x[0] if isinstance(x, tuple) else x
        if i in skip_after:
            n = x.shape[1]
            drop = int(ratio * n)
            keep = torch.ones(n, dtype=torch.bool)
            keep[scores.argsort()[:drop]] = False
            x, positions, scores = x[:, keep], positions[keep], scores[keep]
    if stable:
        x = encoder.layer_norm(x)
    return x, positions


@pytest.mark.parametrize("stable", [False, True], ids=["base", "large"])
def test_the_cascade_matches_a_plain_torch_reference(stable):
    torch.manual_seed(0)
    kwargs = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2),
                  conv_kernel=(10, 3), num_feat_extract_layers=2, num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=4)
    if stable:
        kwargs.update(do_stable_layer_norm=True, feat_extract_norm="layer")
    model = Wav2Vec2Model(Wav2Vec2Config(**kwargs)).eval()
    wav = _random(1, 2000, seed=7)
    with torch.no_grad():
        reference, positions = _cascade_reference(model, wav, [0, 1, 2], 0.3)
        ours = forward_with_skipping(model, wav, None, [0, 1, 2], 0.3)
    n = feature_frames_and_mask(model, wav).hidden.shape[1]
    expected = [n]
    for _ in range(3):
        expected.append(expected[-1] - int(0.3 * expected[-1]))
    assert ours.tokens_per_block == expected
    assert ours.positions[0].tolist() == positions.tolist()
    assert positions.tolist() != list(range(expected[-1]))  # not simply the first tokens
    assert torch.allclose(ours.hidden, reference, atol=1e-5)


def test_padding_kept_counts_and_kept_share_of_the_strategy(folder, tmp_path):
    ssl = load_ssl(folder, tmp_path).eval()
    blocks = ssl.model.config.num_hidden_layers  # 2: skipping after block 0 only
    strategy = AdaptiveSkip(skip_ratio=0.3, skip_after=[0])
    strategy.setup(ssl, {})
    samples = (16000, 9000, 4000)
    wavs, wav_lens = _padded(samples)
    with torch.no_grad():
        feats, lens, out = encode_with_skipping(ssl, wavs, wav_lens, [0], 0.3)
        strategy.encode(ssl, wavs, wav_lens, None)
    frames = [feature_frames(ssl.model, n) for n in samples]
    after = [n - int(0.3 * n) for n in frames]
    assert out.lengths.tolist() == after and feats.shape[:2] == (3, after[0])
    assert (lens * feats.shape[1]).round().long().tolist() == after
    for b, n in enumerate(frames):  # real frames only, each once, in order
        kept = out.positions[b, :after[b]]
        assert kept.max() < n and (kept.diff() > 0).all()
        assert (out.scores[b, after[b]:] == 0).all()
    expected = (sum(frames) + sum(after)) / (blocks * sum(frames))
    assert strategy.stage_stats(None)["kept_share"] == round(expected, 4)
    assert abs(expected - strategy.nominal_kept_share(blocks)) < 0.01
    strategy.stage_start(None)
    assert strategy.stage_stats(None) == {}


def test_training_with_layerdrop_and_gradients(folder, tmp_path):
    ssl = load_ssl(folder, tmp_path).train()
    ssl.model.config.layerdrop = 0.5
    strategy = AdaptiveSkip(skip_ratio=0.5, skip_after=[0])
    wavs, wav_lens = _padded()
    widths = []
    for seed in range(6):  # some draws drop the skip point's block (the skip then follows the
        torch.manual_seed(seed)  # next block that runs: none here), or the block after it
        feats, lens = strategy.encode(ssl, wavs, wav_lens, None)
        widths.append(feats.shape[1])
        feats.sum().backward()
    assert min(widths) == 49 - 24 and max(widths) <= 49
    grads = [p.grad for p in ssl.model.encoder.layers[0].parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    projection = ssl.model.feature_projection.projection.weight.grad
    assert projection is not None and projection.abs().sum() > 0


def test_skip_points_must_be_before_the_last_block():
    model = tiny_model("wav2vec2", "base")  # 2 blocks
    with pytest.raises(ValueError, match="tokens go after blocks 0 to 0"):
        AdaptiveSkip(0.3, skip_after=[1]).setup(model, {})
    with pytest.raises(ValueError, match="skip_ratio"):
        AdaptiveSkip(1.0)


class _Wrapper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.normalize_wav, self.output_norm = False, False

    def forward(self, wavs, wav_lens=None):
        return wrapper_forward(self, wavs, wav_lens)


def test_deployed_flops_count_the_kept_tokens_and_the_scoring():
    model = tiny_model("wav2vec2", "base").eval()
    wrapper = _Wrapper(model)
    wav = _random(1, 16000 * 4, seed=4)
    with torch.no_grad():
        dense = count_flops(wrapper, wav)
        skipping = count_flops(SkippedTokensBackbone(wrapper, [0], 0.5), wav)
        out = encode_with_skipping(wrapper, wav, None, [0], 0.5)[2]
        block = count_flops(lambda x: model.encoder.layers[1](x)[0], torch.zeros(1, 199, 32))
        half = count_flops(lambda x: model.encoder.layers[1](x)[0], torch.zeros(1, 100, 32))
    assert out.tokens_per_block == [199, 100]
    scoring = 2 * 199 * 199 * 32  # block 0's Q K^T, which the fused attention does not give
    assert skipping == dense - block + half + scoring


def test_int8_deployment_decodes_and_the_shipped_model_is_the_decoded_one(tmp_path,
                                                                          tiny_family_models):
    from s3brain.deployment.model import Deployment

    ssl = load_ssl(tiny_family_models[("wav2vec2", "base")], tmp_path).eval()
    head = torch.nn.Linear(ssl.model.config.hidden_size, 5)
    strategy = AdaptiveSkip(skip_ratio=0.5, skip_after=[0])
    deployment = Deployment(ssl, head, [strategy])
    assert deployment.not_decodable is None
    wav = _random(1, 16000, seed=8)
    assert deployment.quantize(wav).backend == "torch"
    fp32, int8 = deployment.decoders()
    with torch.no_grad():
        out, quantized = fp32(wav), int8(wav)
        plain = head(encode_with_skipping(ssl, wav, None, [0], 0.5)[0])
    assert out.shape == quantized.shape == (1, 25, 5)  # 49 frames, 24 skipped
    assert torch.allclose(out, plain, atol=1e-5)
    # the inference folder's model skips as the deployment decodes (padded as if alone)
    ctc = Deployment(ssl, torch.nn.Sequential(torch.nn.Identity(), head), [strategy]).ctc_model()
    with torch.no_grad():
        torch.testing.assert_close(ctc(wav), out.log_softmax(-1), rtol=0, atol=1e-5)


def test_a_padded_utterance_skips_as_it_does_alone(folder):
    """Masks and (WavLM) position bias follow the kept tokens: the padding changes nothing that
    it does not change in the plain forward (data2vec-audio's positional convolutions let the
    padding reach the last real frames even there)."""
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    width, short = 60, 41
    hidden = _random(2, width, model.config.hidden_size, seed=3)
    lengths = torch.tensor([width, short])
    mask = torch.arange(width)[None, :] < lengths[:, None]

    def batch_and_alone(ratio):
        with torch.no_grad():
            batch = skipped_blocks(model, Frames(hidden, mask, lengths, None), [0], ratio)
            alone = [skipped_blocks(model, Frames(hidden[b:b + 1, :n], None, None, None), [0],
                                    ratio) for b, n in enumerate(lengths.tolist())]
        return batch, alone

    plain_batch, plain_alone = batch_and_alone(0.0)
    padding_effect = (plain_batch.hidden[1, :short] - plain_alone[1].hidden[0]).abs().max()
    batch, alone = batch_and_alone(0.4)
    assert batch.lengths.tolist() == [width - 24, short - 16]
    assert batch.tokens_per_block == [width + short, width - 24 + short - 16]
    assert torch.equal(batch.positions[1, :short - 16], alone[1].positions[0])
    assert torch.equal(batch.positions[0], alone[0].positions[0])
    difference = (batch.hidden[1, :short - 16] - alone[1].hidden[0]).abs().max()
    assert difference <= max(1e-5, 1.5 * float(padding_effect))
    assert torch.allclose(batch.hidden[0], alone[0].hidden[0], atol=1e-5)
    assert batch.positions[1, :short - 16].max() < short  # never a padded frame
