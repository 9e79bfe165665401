"""Drop-in layers: same results as the ops, static output lengths, configs that round-trip."""

import math

import pytest
import torch

import lalm_fast.ops as ops
from lalm_fast import nn as lnn


@pytest.mark.parametrize(
    "spec, op",
    [
        ("uniform:3", lambda x, L: ops.uniform_pool(x, L, 3)),
        ("downsample:2", lambda x, L: ops.downsample(x, L, 2)),
        ("segment:rate=3", lambda x, L: ops.segment_compress(x, L, rate=3)),
        ("segment:prominence=0.1,min_len=2", lambda x, L: ops.segment_compress(x, L, prominence=0.1, min_len=2)),
        ("segment:threshold=0.9,max_len=5", lambda x, L: ops.segment_compress(x, L, threshold=0.9, max_len=5)),
        ("none", lambda x, L: ops.uniform_pool(x, L, 1)),
    ],
)
def test_layers_equal_their_ops_and_round_trip_config(spec, op):
    layer = lnn.build_compressor(spec)
    x = torch.randn(3, 20, 8)
    lengths = torch.tensor([20, 7, 0])
    got, want = layer(x, lengths), op(x, lengths)
    assert torch.equal(got.values, want.values) and torch.equal(got.lengths, want.lengths)
    rebuilt = lnn.build_compressor(layer.config())
    assert type(rebuilt) is type(layer) and rebuilt.config() == layer.config()
    assert torch.equal(rebuilt(x, lengths).values, got.values)
    if layer.static_length:
        assert torch.equal(layer.output_lengths(lengths), got.lengths)
    else:
        with pytest.raises(TypeError, match="content-adaptive"):
            layer.output_lengths(lengths)


def test_identity_keeps_every_frame_and_zeroes_padding():
    x = torch.randn(2, 5, 3)
    out = lnn.Identity()(x, torch.tensor([5, 2]))
    assert torch.equal(out.values[0], x[0]) and torch.equal(out.values[1, :2], x[1, :2])
    assert not out.values[1, 2:].any()


def test_attention_mask_input_and_mask_helper():
    layer = lnn.UniformPool(2)
    x = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    out = layer(x, attention_mask=mask)
    assert out.lengths.tolist() == [3, 2]
    assert out.mask().tolist() == [[1, 1, 1], [1, 1, 0]]


def test_extra_repr_names_the_options():
    assert repr(lnn.UniformPool(3)) == "UniformPool(k=3)"
    assert repr(lnn.SegmentPool(rate=3, min_len=2, backend="cpu")) == "SegmentPool(rate=3, min_len=2, backend='cpu')"


def test_segment_rate_matches_uniform_token_count():
    x = torch.randn(4, 50, 16)
    lengths = torch.tensor([50, 33, 1, 0])
    seg, uni = lnn.SegmentPool(rate=3)(x, lengths), lnn.UniformPool(3)(x, lengths)
    assert torch.equal(seg.lengths, uni.lengths)
    assert seg.lengths.tolist() == [math.ceil(n / 3) for n in lengths.tolist()]


def test_layers_work_inside_a_model_with_gradients_and_compile():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    layer = lnn.build_compressor("segment:rate=2")
    x = torch.randn(2, 12, 8)
    lengths = torch.tensor([12, 5])

    def forward(x, lengths):
        out = layer(model(x), lengths)
        return (out.values * out.mask()[..., None]).sum()

    forward(x, lengths).backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    compiled = torch.compile(forward, fullgraph=True)
    torch.testing.assert_close(compiled(x, lengths), forward(x, lengths))


@pytest.mark.parametrize(
    "spec, error, words",
    [
        ("pool:3", ValueError, "unknown compressor kind 'pool'"),
        ("uniform:0", ValueError, "k must be >= 1"),
        ("uniform:2.5", ValueError, "k must be an int"),
        ("segment:rate=abc", ValueError, "values must be numbers"),
        ("segment:rate=3,threshold=0.2", ValueError, "choose one detection mode"),
        ("segment:speed=3", ValueError, "bad options for compressor 'segment'"),
        (42, TypeError, "must be a string, dict or AudioCompressor"),
        ({"kind": "uniform"}, ValueError, "bad options"),
    ],
)
def test_bad_specs_raise_clear_errors(spec, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        lnn.build_compressor(spec)


def test_layer_on_a_transformers_whisper_encoder():
    """The README's example: a layer on the output of a (tiny, random) WhisperEncoder."""
    transformers = pytest.importorskip("transformers")
    config = transformers.WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2,
                                        encoder_ffn_dim=32, decoder_layers=1, decoder_attention_heads=2,
                                        decoder_ffn_dim=32, num_mel_bins=8, max_source_positions=50)
    encoder = transformers.WhisperModel(config).get_encoder()
    mel = torch.randn(2, 8, 100)                      # 2 s of log-mel at 100 frames/s
    hidden = encoder(mel).last_hidden_state           # [2, 50, 16]: 50 encoder frames/s
    frame_lengths = torch.tensor([50, 31])            # valid encoder frames per sample
    out = lnn.build_compressor("segment:rate=3")(hidden, frame_lengths)
    assert out.values.shape == (2, 17, 16) and out.lengths.tolist() == [17, 11]
    out.values.sum().backward()
    assert encoder.layers[0].fc1.weight.grad.abs().sum() > 0
