"""SALAD pseudo labels, recall-aware loss, token dropping and the skip baselines."""

import pytest
import torch

from s3brain.strategies import token_dropping as salad


@pytest.mark.parametrize("frames,expected", [
    ([0, 0, 0], [0, 0, 0]),                    # all blank
    ([4, 4, 4, 4], [1, 0, 0, 0]),              # one symbol held: only its first frame
    ([4, 0, 4], [1, 0, 1]),                    # the same symbol twice, split by a blank
    ([4, 5, 5, 6, 0, 0, 6], [1, 1, 0, 1, 0, 0, 1]),
])
def test_pseudo_label_rule(frames, expected):
    assert salad.salient_labels(torch.tensor([frames]), blank=0).tolist() == [expected]


@pytest.mark.parametrize("skip_ratio", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
def test_dropper_keeps_every_salient_frame_in_order(skip_ratio):
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([50, 37, 12])
    prob = torch.rand(3, 50, generator=g)
    prob[:, ::4] = 0.95  # clearly salient
    features = torch.arange(50.).repeat(3, 1).unsqueeze(-1)  # frame index as the feature
    out, new_lengths, keep = salad.drop_tokens(features, lengths, prob, skip_ratio)
    assert out.shape[1] == int(new_lengths.max())
    for b, length in enumerate(lengths.tolist()):
        detected_salient = (prob[b, :length] >= 0.5).nonzero().squeeze(1)
        kept_index = out[b, : new_lengths[b], 0].long()
        assert set(detected_salient.tolist()) <= set(kept_index.tolist())
        assert kept_index.tolist() == sorted(kept_index.tolist())  # order kept
        non_salient = length - detected_salient.numel()
        assert new_lengths[b] == length - int(skip_ratio * non_salient)
        assert (out[b, new_lengths[b]:] == 0).all()  # padding
        assert not keep[b, length:].any()
        # the dropped ones are the most confident non-salient frames
        dropped = (~keep[b, :length]).nonzero().squeeze(1)
        if dropped.numel() and new_lengths[b] > detected_salient.numel():
            kept_ns = [i for i in kept_index.tolist() if prob[b, i] < 0.5]
            assert prob[b, dropped].max() <= min(prob[b, kept_ns])


def test_recall_aware_loss_weights_salient_frames_alpha_times():
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.0]])
    labels = torch.tensor([[1, 0, 0, 1]])
    per_frame = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, labels.float(), reduction="none")[0]
    weights = torch.tensor([10.0, 1.0, 1.0, 10.0])
    expected = (per_frame * weights).sum() / weights.sum()
    assert salad.recall_aware_bce(logits, labels, alpha=10.0) == pytest.approx(float(expected))
    # frames past the length do not count
    short = salad.recall_aware_bce(logits, labels, torch.tensor([2]), alpha=10.0)
    assert short == pytest.approx(float((per_frame[:2] * weights[:2]).sum() / 11.0))


def test_detector_shapes_and_stats():
    detector = salad.SaladDetector(in_channels=64, channels=32)
    logits = detector(torch.randn(2, 40, 64))
    assert logits.shape == (2, 40)
    labels = torch.zeros(2, 40, dtype=torch.long)
    labels[:, ::5] = 1
    stats = salad.detection_stats(torch.where(labels.bool(), 1.0, -1.0), labels)
    assert stats == pytest.approx({"accuracy": 1.0, "salient_recall": 1.0, "salient_share": 0.2})


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 0.6])
def test_skip_baselines_drop_the_matched_share(share):
    lengths = torch.tensor([40, 23])
    uniform = salad.uniform_keep(lengths, 40, share)
    rand = salad.random_keep(lengths, 40, share, torch.Generator().manual_seed(1))
    for keep in (uniform, rand):
        assert not keep[1, 23:].any()
        for b, length in enumerate(lengths.tolist()):
            assert abs(int(keep[b].sum()) - length * (1 - share)) <= 1
    gaps = torch.diff(uniform[0].nonzero().squeeze(1))
    assert gaps.max() - gaps.min() <= 1  # evenly spaced


def _small_model():
    from transformers import AutoModel, Wav2Vec2Config
    torch.manual_seed(0)
    return AutoModel.from_config(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2,
        feat_extract_norm="layer", do_stable_layer_norm=True)).eval()


def test_forward_without_dropping_equals_the_model():
    model = _small_model()
    wav = torch.randn(2, 3200)
    lengths = torch.tensor([3200, 2000])
    mask = (torch.arange(3200)[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        hidden, frames, _ = salad.forward_with_dropping(
            model, wav * mask, lengths, lambda f, n: torch.ones(f.shape[:2], dtype=torch.bool))
        reference = model(wav * mask, attention_mask=mask).last_hidden_state
    assert frames.tolist() == model._get_feat_extract_output_lengths(lengths).tolist()
    assert torch.allclose(hidden[0], reference[0], atol=1e-5)
    assert torch.allclose(hidden[1, : frames[1]], reference[1, : frames[1]], atol=1e-5)


def test_forward_with_dropping_gives_the_kept_lengths():
    model = _small_model()
    wav = torch.randn(2, 3200)
    lengths = torch.tensor([3200, 2400])
    with torch.no_grad():
        hidden, frames, keep = salad.forward_with_dropping(
            model, wav, lengths, lambda f, n: salad.uniform_keep(n, f.shape[1], 0.5))
    full = model._get_feat_extract_output_lengths(lengths)
    assert frames.tolist() == keep.sum(1).tolist()
    assert all(abs(int(k) - int(f) / 2) <= 1 for k, f in zip(frames, full))
    assert hidden.shape[1] == int(frames.max())


def test_block_outputs_are_the_models_hidden_states():
    model = _small_model()
    wav = torch.randn(1, 3200)
    with torch.no_grad(), salad.block_outputs(model) as blocks:
        out = model(wav, output_hidden_states=True)
    assert len(blocks) == model.config.num_hidden_layers
    # stable layer norm: the last hidden state is the final layer norm of the last block
    for mine, theirs in zip(blocks[:-1], out.hidden_states[1:-1]):
        assert torch.allclose(mine, theirs, atol=1e-6)
    assert torch.allclose(model.encoder.layer_norm(blocks[-1]), out.last_hidden_state, atol=1e-5)


def test_lobe_forward_with_dropping_matches_the_lobe(tmp_path):
    """Keeping every frame, the recipe's path through the dropper gives what SpeechBrain's
    Wav2Vec2 lobe gives, on the valid frames of a padded batch, lengths included."""
    from s3brain.backbone.wrapper import default_backbone, load_ssl

    ssl = load_ssl(default_backbone(), tmp_path / "ssl", freeze=True).eval()
    wavs = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    wav_lens = torch.tensor([1.0, 0.6])
    wavs[1, 9600:] = 0
    keep_all = salad.TokenDropper("uniform", drop_share=0.0)
    with torch.no_grad():
        feats, rel, keep, blocks = salad.encode_with_dropping(ssl, wavs, wav_lens, keep_all,
                                                              blocks=True)
        reference = ssl(wavs, wav_lens)
    frames = ssl.model._get_feat_extract_output_lengths(torch.tensor([16000, 9600]))
    assert keep.sum(1).tolist() == frames.tolist()
    assert rel.tolist() == pytest.approx((frames / frames.max()).tolist())
    assert len(blocks) == ssl.model.config.num_hidden_layers
    for b, n in enumerate(frames.tolist()):
        assert torch.allclose(feats[b, :n], reference[b, :n], atol=1e-4)
    assert keep_all.kept_share == 1.0


def test_token_dropping_modules_count_and_choose_frames():
    lengths = torch.tensor([30, 18])
    features = torch.randn(2, 30, 8)
    uniform = salad.TokenDropper("uniform", drop_share=0.5)
    keep = uniform(features, lengths)
    assert keep.sum(1).tolist() == [15, 9]
    assert uniform.kept_share == pytest.approx(24 / 48)
    uniform.reset_counts()
    assert uniform.kept_share == 0.0
    # SALAD: frames the detector calls salient always stay
    detector = salad.SaladDetector(8, channels=4)
    dropper = salad.TokenDropper("salad", skip_ratio=1.0, detector=detector)
    keep = dropper(features, lengths)
    with torch.no_grad():
        salient = torch.sigmoid(detector(features)) >= 0.5
    for b, n in enumerate(lengths.tolist()):
        assert keep[b, :n].tolist() == salient[b, :n].tolist()  # skip_ratio 1: every NAT goes
    assert not any(p.requires_grad for p in detector.parameters())
    with pytest.raises(ValueError, match="detector"):
        salad.TokenDropper("salad")
    with pytest.raises(ValueError, match="method"):
        salad.TokenDropper("adaptive")


def test_detector_save_load_round_trip(tmp_path):
    detector = salad.SaladDetector(16, channels=8, layers=3).eval()
    salad.save_detector(tmp_path / "salad_detector.pt", detector, alpha=10.0)
    loaded = salad.load_detector(tmp_path)  # the folder is enough
    x = torch.randn(2, 11, 16)
    assert torch.equal(loaded(x), detector(x))
    with pytest.raises(FileNotFoundError, match="train_salad.py"):
        salad.load_detector(tmp_path / "elsewhere")


def test_an_utterance_keeps_at_least_one_frame():
    model = _small_model()
    with torch.no_grad():
        hidden, frames, keep = salad.forward_with_dropping(
            model, torch.randn(2, 3200), torch.tensor([3200, 1600]),
            lambda f, n: torch.zeros(f.shape[:2], dtype=torch.bool))
    assert frames.tolist() == [1, 1] and keep.sum().item() == 2
    assert torch.isfinite(hidden).all()
