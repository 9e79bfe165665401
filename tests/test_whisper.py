"""Compression inside transformers' native Whisper: tiny random-init models, CPU, fp32; and (asset
tier) the packaged tiny.en on synthesised speech."""

import importlib.util

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import WhisperConfig, WhisperForConditionalGeneration  # noqa: E402

from lalm_fast.integrations import whisper as wh  # noqa: E402
from lalm_fast.nn import AudioCompressor, build_compressor  # noqa: E402

MEL = 80
FRAMES = 1500
DECODER_IDS = torch.tensor([[1, 5, 7, 9], [1, 9, 3, 4], [1, 4, 4, 8]])
MEL_LENGTHS = [3000, 1234, 701]          # 1500, 617 and 351 valid encoder frames


def tiny_model(seed=0, attn="sdpa"):
    torch.manual_seed(seed)
    config = WhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=MEL,
                           max_source_positions=FRAMES, max_target_positions=32, vocab_size=100,
                           decoder_start_token_id=1, bos_token_id=1, pad_token_id=0, eos_token_id=2,
                           begin_suppress_tokens=None, suppress_tokens=None, attn_implementation=attn)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config.begin_suppress_tokens = None   # the default ids are beyond the tiny vocabulary
    return model


def features(batch=3, seed=1):
    torch.manual_seed(seed)
    return torch.randn(batch, MEL, 2 * FRAMES)


def mel_mask(lengths=MEL_LENGTHS):
    return (torch.arange(2 * FRAMES)[None, :] < torch.tensor(lengths)[:, None]).long()


def logits(model, x, attention_mask=None, ids=DECODER_IDS, **kwargs):
    with torch.no_grad():
        return model(x, attention_mask=attention_mask, decoder_input_ids=ids[:len(x)], **kwargs).logits


def patch_state(model):
    """Everything a patch could leave behind on the instances it touches."""
    inner = model.model
    return ({k for k in inner.__dict__ if "lalm" in k or k == "forward"},
            {k for k in inner.encoder.__dict__ if "lalm" in k or k == "forward"},
            [len(layer._forward_pre_hooks) for layer in inner.decoder.layers])


# ---------------------------------------------------------------------------------------------
# Patch / revert

def test_none_equals_the_unpatched_model_and_revert_restores_exactly():
    model, x = tiny_model(), features()
    before, state = logits(model, x), patch_state(model)
    with wh.compression(model, "none"):
        assert wh.is_compressed(model)
        assert torch.equal(logits(model, x), before)
    assert not wh.is_compressed(model) and patch_state(model) == state
    wh.apply_compression(model, "uniform:3")
    assert not torch.allclose(logits(model, x), before)
    wh.revert(model)
    assert torch.equal(logits(model, x), before) and patch_state(model) == state
    with pytest.raises(ValueError, match="no compression"):
        wh.revert(model)


def test_patching_one_model_leaves_another_alone():
    patched, other, x = tiny_model(), tiny_model(), features(1)
    before = logits(other, x)
    wh.apply_compression(patched, "uniform:3")
    assert torch.equal(logits(other, x), before)
    assert not wh.is_compressed(other)
    assert type(other.model).forward is type(patched.model).forward    # the class was not touched


def test_reapplying_replaces_the_compressor():
    model, x = tiny_model(), features(1)
    wh.apply_compression(model, "downsample:2")
    wh.apply_compression(model, {"kind": "uniform", "k": 3})
    with torch.no_grad():
        assert wh.encode(model, x).last_hidden_state.shape[1] == FRAMES // 3
    expected = logits(model, x)
    wh.revert(model)
    with wh.compression(model, build_compressor("uniform:3")):
        assert torch.equal(logits(model, x), expected)
    assert patch_state(model) == patch_state(tiny_model())


# ---------------------------------------------------------------------------------------------
# What the decoder reads

def _pooled_reference(encoder_output, frames, k):
    """Mean of every k valid frames (the last group may be shorter), built with plain torch."""
    return torch.stack([chunk.mean(0) for chunk in encoder_output[:frames].split(k)])


def test_uniform_equals_hand_pooled_encoder_output():
    model, x = tiny_model(), features()
    with torch.no_grad():
        encoded = model.model.encoder(x).last_hidden_state
    # All frames valid, T divisible by k: a reshape-mean.
    full = encoded.reshape(3, FRAMES // 3, 3, -1).mean(2)
    expected_full = logits(model, x, encoder_outputs=(full,))
    # Per sample over its valid frames, each alone (no padding, so no mask is needed).
    frames = wh.encoder_frame_lengths(mel_mask(), FRAMES, 3, x.device).tolist()
    assert frames == [1500, 617, 351]
    expected = [logits(model, x[b:b + 1], ids=DECODER_IDS[b:b + 1],
                       encoder_outputs=(_pooled_reference(encoded[b], frames[b], 3)[None],))[0] for b in range(3)]
    with wh.compression(model, "uniform:3"):
        torch.testing.assert_close(logits(model, x), expected_full, rtol=0, atol=1e-5)
        batched = logits(model, x, mel_mask())
    for b in range(3):
        torch.testing.assert_close(batched[b], expected[b], rtol=0, atol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("spec", ["uniform:3", "segment:rate=3", "none"])
def test_batched_equals_each_sample_alone(spec, attn):
    model, x, mask = tiny_model(attn=attn), features(), mel_mask()
    with wh.compression(model, spec):
        batched = logits(model, x, mask)
        for b in range(3):
            alone = logits(model, x[b:b + 1], mask[b:b + 1], ids=DECODER_IDS[b:b + 1])
            torch.testing.assert_close(batched[b], alone[0], rtol=0, atol=1e-5)


def test_without_the_cross_attention_mask_padding_leaks(monkeypatch):
    # Stock WhisperDecoder passes encoder_attention_mask=None: drop ours to see why it is needed.
    monkeypatch.setattr(wh, "_cross_attention_mask", lambda *args: None)
    model, x, mask = tiny_model(), features(), mel_mask()
    with wh.compression(model, "uniform:3"):
        batched = logits(model, x, mask)
        alone = logits(model, x[1:2], mask[1:2], ids=DECODER_IDS[1:2])
    assert not torch.allclose(batched[1], alone[0], atol=1e-3)


def test_padding_is_never_read():
    model, x, mask = tiny_model(), features(), mel_mask()
    with torch.no_grad():
        encoded = model.model.encoder(x).last_hidden_state
    frames = wh.encoder_frame_lengths(mask, FRAMES, 3, x.device)
    invalid = torch.arange(FRAMES)[None, :, None] >= frames[:, None, None]
    noisy = torch.where(invalid, torch.randn_like(encoded) * 100, encoded)
    with wh.compression(model, "segment:rate=3"):
        expected = logits(model, x, mask)
        torch.testing.assert_close(logits(model, x, mask, encoder_outputs=(noisy,)), expected, rtol=0, atol=1e-6)
        # Rows past a sample's compressed count are never attended either.
        with torch.no_grad():
            out = wh.encode(model, x, mask)
        rows = torch.arange(out.last_hidden_state.shape[1])[None, :, None] >= out.lengths[:, None, None]
        out.last_hidden_state = torch.where(rows, torch.full_like(out.last_hidden_state, 1e4), out.last_hidden_state)
        torch.testing.assert_close(logits(model, x, mask, encoder_outputs=out), expected, rtol=0, atol=1e-6)


def test_a_compressor_must_keep_the_feature_size():
    class Halve(AudioCompressor):
        kind = "halve"

        def forward(self, x, lengths=None, attention_mask=None):
            return build_compressor("none")(x[..., ::2], lengths)

    with wh.compression(tiny_model(), Halve()) as model, pytest.raises(ValueError, match="feature size"):
        logits(model, features(1))


def _decoder_grads(model, x, mask):
    model.zero_grad()
    model(x, attention_mask=mask, labels=DECODER_IDS[:len(x), 1:]).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if ".decoder." in name and p.grad is not None}


def test_activation_checkpointing_recomputes_with_the_mask():
    model, x, mask = tiny_model(), features(2), mel_mask(MEL_LENGTHS[1:])
    model.train()
    with wh.compression(model, "uniform:3"):
        expected = _decoder_grads(model, x, mask)
        model.activation_checkpointing_enable()
        assert model.model.decoder.layers[0].gradient_checkpointing
        checkpointed = _decoder_grads(model, x, mask)
    assert expected.keys() == checkpointed.keys() and expected
    for name in expected:
        torch.testing.assert_close(checkpointed[name], expected[name], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# generate

def _generate(model, x, mask, **kwargs):
    with torch.no_grad():
        return model.generate(x, attention_mask=mask, max_new_tokens=4, **kwargs)


@pytest.mark.parametrize("spec", ["uniform:3", "segment:rate=3"])
def test_generate_batched_equals_alone_and_compresses_once(spec):
    model, x, mask = tiny_model(), features(), mel_mask()
    with wh.compression(model, spec):
        compressor = wh.inner_model(model).__dict__[wh._PATCH_ATTR].compressor
        calls = []
        compressor.register_forward_hook(lambda *args: calls.append(1))
        batched = _generate(model, x, mask)
        assert len(calls) == 1                  # once per generate, not per decoding step
        assert batched.shape[1] >= 4
        for b in range(3):
            alone = _generate(model, x[b:b + 1], mask[b:b + 1])
            assert torch.equal(batched[b, :alone.shape[1]], alone[0])


def test_generate_on_a_peft_model():
    peft = pytest.importorskip("peft")
    model, x, mask = tiny_model(), features(2), mel_mask(MEL_LENGTHS[1:])
    peft_model = peft.get_peft_model(model, wh.decoder_lora_config())
    with wh.compression(peft_model, "uniform:3"):
        assert wh.is_compressed(peft_model) and wh.is_compressed(model)
        tokens = _generate(peft_model, x, mask)
        plain = _generate(model, x, mask)       # LoRA B starts at zero: same tokens as the base
    assert torch.equal(tokens, plain)


# ---------------------------------------------------------------------------------------------
# LoRA

def _lora_model():
    peft = pytest.importorskip("peft")
    from lalm_fast.integrations import lora

    model = peft.get_peft_model(tiny_model(), wh.decoder_lora_config(r=4))
    torch.manual_seed(2)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)   # lora_B starts at zero: make the adapter matter
    return model, lora


@pytest.mark.parametrize("self_attention, cross_attention, blocks",
                         [(True, True, {"self_attn", "encoder_attn"}), (False, True, {"encoder_attn"}),
                          (True, False, {"self_attn"})])
def test_lora_preset_targets_decoder_attention_only(self_attention, cross_attention, blocks):
    peft = pytest.importorskip("peft")
    from lalm_fast.integrations import lora

    config = wh.decoder_lora_config(self_attention=self_attention, cross_attention=cross_attention)
    names = lora.lora_module_names(peft.get_peft_model(tiny_model(), config))
    assert len(names) == 4 * len(blocks)                 # one decoder layer, four projections per block
    assert all(".model.decoder.layers." in name and name.split(".")[-2] in blocks for name in names)
    with pytest.raises(ValueError):
        wh.decoder_lora_config(self_attention=False, cross_attention=False)


def test_lora_training_step_changes_only_lora_weights():
    model, _ = _lora_model()
    x, mask = features(2), mel_mask(MEL_LENGTHS[1:])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    wh.apply_compression(model, "segment:rate=3")
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(x, attention_mask=mask, labels=DECODER_IDS[:2, 1:]).loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all("lora_" in name and ".decoder." in name for name in changed)


def test_save_load_round_trip(tmp_path):
    model, lora = _lora_model()
    x, mask = features(2), mel_mask(MEL_LENGTHS[1:])
    wh.apply_compression(model, "uniform:2")
    expected = logits(model, x, mask)
    lora.save_adapter(model, tmp_path / "adapter", "uniform:2")
    loaded, compressor, options = lora.load_adapter(tiny_model(), tmp_path / "adapter")
    assert compressor.config() == {"kind": "uniform", "k": 2} and options == {}
    with wh.compression(loaded, compressor, **options):
        torch.testing.assert_close(logits(loaded, x, mask), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Asset tier: the packaged tiny.en on synthesised speech

UTTERANCES = ["please call me tomorrow morning", "the weather is nice today"]


@pytest.mark.asset
def test_packaged_tiny_en_transcribes_with_compression(tmp_path):
    from lalm_fast.models import pretrained
    from tests.test_pretrained import _synthesise

    asset = pretrained.WHISPER["tiny.en"]
    for module, _ in asset.parts:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"package {module!r} not installed ({asset.install})")
    audio = [_synthesise(text, tmp_path / f"{i}.wav") for i, text in enumerate(UTTERANCES)]
    model, processor = pretrained.load_whisper_model("packaged:tiny.en")
    inputs = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)

    def transcribe(**kwargs):
        with torch.no_grad():
            tokens = model.generate(inputs.input_features, max_new_tokens=24, **kwargs)
        return tokens, processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)

    stock_tokens, stock = transcribe()
    with wh.compression(model, "none"):
        none_tokens, _ = transcribe()
    with wh.compression(model, "uniform:2"):
        _, halved = transcribe(attention_mask=inputs.attention_mask)
    assert torch.equal(none_tokens, stock_tokens), stock
    assert all(text.strip() for text in halved), halved
