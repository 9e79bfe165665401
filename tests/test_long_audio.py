"""Long audio: 30 s windows, each compressed, joined per audio (model-agnostic helper + Qwen2-Audio)."""

import pytest
import torch

from lalm_fast import long_audio as la
from lalm_fast.nn import build_compressor


def _frames_encoder(compressor):
    """A stand-in encoder: frames are the features themselves ([W, C, T] -> [W, T, C])."""
    def encode(windows, lengths):
        return compressor(windows.transpose(1, 2), lengths)
    return encode


def test_split_keeps_only_windows_that_hold_audio():
    features = torch.arange(2 * 3 * 25, dtype=torch.float32).reshape(2, 3, 25)
    windows = la.split_windows(features, torch.tensor([25, 7]), window=10)
    assert windows.per_audio.tolist() == [3, 1]
    assert windows.lengths.tolist() == [10, 10, 5, 7]
    assert torch.equal(windows.features[1], features[0, :, 10:20])
    assert torch.equal(windows.features[2, :, :5], features[0, :, 20:25])
    assert not windows.features[2, :, 5:].any()                      # zero-padded tail


@pytest.mark.parametrize("spec", ["uniform:3", "segment:rate=2", "segment:prominence=0.05"])
def test_joined_tokens_equal_per_window_compression(spec):
    compressor = build_compressor(spec)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 4, 50, generator=generator)
    lengths = torch.tensor([50, 0, 23])
    out = la.encode_windowed(_frames_encoder(compressor), features, lengths, window=20, frames_per_window=20)
    for audio, length in enumerate(lengths.tolist()):
        pieces = [compressor(features[audio:audio + 1, :, start:start + 20].transpose(1, 2),
                             torch.tensor([min(20, length - start)])) for start in range(0, length, 20)]
        expected = torch.cat([p.values[0, :int(p.lengths[0])] for p in pieces]) if pieces else torch.zeros(0, 4)
        spans = torch.cat([p.spans[0, :int(p.lengths[0])] + 20 * i for i, p in enumerate(pieces)]) if pieces else None
        assert int(out.lengths[audio]) == expected.shape[0]
        torch.testing.assert_close(out.values[audio, :expected.shape[0]], expected)
        assert not out.values[audio, expected.shape[0]:].any()
        if spans is not None:
            assert torch.equal(out.spans[audio, :expected.shape[0]], spans)
            assert int(spans[-1, 1]) == length                     # spans cover the whole audio
    if compressor.static_length:
        counts = la.windowed_token_counts(lengths, 20, compressor.output_lengths)
        assert counts.tolist() == out.lengths.tolist()


def test_gradients_reach_every_window():
    features = torch.randn(1, 2, 45, requires_grad=True)
    out = la.encode_windowed(_frames_encoder(build_compressor("uniform:2")), features, torch.tensor([45]), 20)
    out.values.sum().backward()
    assert (features.grad != 0).all()


def test_padded_samples_whole_windows():
    assert la.padded_samples(75 * 16000, 30 * 16000) == 90 * 16000
    assert la.padded_samples(0, 480000) == 480000


def test_qwen2_audio_75_seconds_through_the_long_audio_path():
    pytest.importorskip("transformers")
    from lalm_fast.integrations import qwen2_audio as qa
    from tests.test_qwen2_audio import AUDIO, processed, tiny_model, tiny_processor, valid_logits

    model = tiny_model(max_source_positions=1500)          # the real 30 s / 3000-frame window
    processor = qa.patch_processor(tiny_processor(chunk_seconds=30), "uniform:3", long_audio=True)
    seconds = [75.0, 20.0]
    with torch.no_grad(), qa.compression(model, "uniform:3"):
        batch = processed(processor, seconds, "left")
        assert batch["input_features"].shape[-1] == 9000     # padded to whole windows, not cut at 30 s
        # 7500 mel frames = windows of 3000, 3000, 1500 -> 750 + 750 + 375 native tokens -> /3
        assert (batch["input_ids"] == AUDIO).sum(-1).tolist() == [250 + 250 + 125, 167]
        audio = qa.get_audio_features(model, batch["input_features"], batch["feature_attention_mask"])
        assert audio.lengths.tolist() == [625, 167]
        assert int(audio.spans[0, 624, 1]) == 750 + 750 + 375  # spans count the audio's own 25 Hz frames
        logits = model(**batch).logits
        alone = model(**processed(processor, seconds[1:], "left")).logits[0]
        torch.testing.assert_close(valid_logits(logits, batch["attention_mask"], 1), alone, rtol=1e-5, atol=1e-5)
    # 3x compression fits 75 s in fewer tokens than 30 s take natively.
    assert 625 < int(qa.audio_token_counts([3000], "none")[0]) == 750


def test_the_integrations_module_re_exports_the_windowing():
    from lalm_fast.integrations import long_audio as old

    assert all(getattr(old, name) is getattr(la, name) for name in old.__all__)
