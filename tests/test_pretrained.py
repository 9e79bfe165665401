"""Offline pretrained components: the CTranslate2 reader and Whisper converter, short encoder
windows, the conversion cache; and (asset tier) the real packaged Whisper and SmolLM2."""

from __future__ import annotations

import importlib.util
import shutil
import struct
import subprocess
import time

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from lalm_fast.evaluate import wer
from lalm_fast.models import ctranslate2, pretrained
from lalm_fast.models.ctranslate2 import ModelBinError

# ---------------------------------------------------------------------------------------------
# model.bin reader. The test encodes files itself, straight from the documented layout, so the
# reader is checked against the format rather than against code of its own.

CODES = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4, torch.bfloat16: 5}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _model_bin(variables: dict[str, torch.Tensor], aliases: dict[str, str], version: int = 6) -> bytes:
    out = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, tensor in variables.items():
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        out += _string(name) + struct.pack(f"<B{tensor.dim()}I", tensor.dim(), *tensor.shape)
        out += struct.pack("<BI", CODES[tensor.dtype], len(raw)) + raw
    out += struct.pack("<I", len(aliases))
    return out + b"".join(_string(alias) + _string(target) for alias, target in aliases.items())


SYNTHETIC = {
    "encoder/conv1/weight": torch.randn(4, 2, 3),
    "decoder/embeddings/weight": torch.randn(5, 3).half(),
    "decoder/x/bf16": torch.randn(2, 2).bfloat16(),
    "encoder/num_heads": torch.tensor(6, dtype=torch.int16),
    "decoder/activation": torch.tensor(3, dtype=torch.int8),
    "decoder/ids": torch.arange(7, dtype=torch.int32),
}


def test_model_bin_reader_reads_every_dtype_and_resolves_aliases(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bin(SYNTHETIC, {"decoder/projection/weight": "decoder/embeddings/weight"}))
    variables = ctranslate2.read_model_bin(path)
    assert set(variables) == set(SYNTHETIC) | {"decoder/projection/weight"}
    for name, expected in SYNTHETIC.items():
        assert variables[name].dtype == expected.dtype and torch.equal(variables[name], expected), name
    assert torch.equal(variables["decoder/projection/weight"], SYNTHETIC["decoder/embeddings/weight"])


def test_model_bin_in_parts_reads_as_one_file(tmp_path):
    data = _model_bin(SYNTHETIC, {})
    (tmp_path / "a").write_bytes(data[:101])
    (tmp_path / "b").write_bytes(data[101:])
    variables = ctranslate2.read_model_bin([tmp_path / "a", tmp_path / "b"])
    assert torch.equal(variables["decoder/ids"], SYNTHETIC["decoder/ids"])


@pytest.mark.parametrize("cut", [3, 20, 60, -5])
def test_truncated_model_bin_is_a_clear_error_naming_the_file(tmp_path, cut):
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bin(SYNTHETIC, {"alias": "decoder/ids"})[:cut])
    with pytest.raises(ModelBinError, match=r"model\.bin.*truncated"):
        ctranslate2.read_model_bin(path)


def test_unknown_version_and_trailing_bytes_are_rejected(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bin(SYNTHETIC, {}, version=5))
    with pytest.raises(ModelBinError, match=f"{path}.*version 5"):
        ctranslate2.read_model_bin(path)
    path.write_bytes(_model_bin(SYNTHETIC, {}) + b"xx")
    with pytest.raises(ModelBinError, match="trailing"):
        ctranslate2.read_model_bin(path)


# ---------------------------------------------------------------------------------------------
# Converter: a tiny random HF Whisper, written out in CTranslate2's naming by hand, converts back
# to the identical state dict.

TINY = dict(vocab_size=60, num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=2, decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=24,
            max_source_positions=30, max_target_positions=20, pad_token_id=50, eos_token_id=50,
            bos_token_id=51, decoder_start_token_id=51)
SPECIAL = {"<|endoftext|>": 50, "<|startoftranscript|>": 51, "<|en|>": 52, "<|de|>": 53,
           "<|translate|>": 54, "<|transcribe|>": 55, "<|nospeech|>": 56, "<|notimestamps|>": 57}


def _tiny_whisper() -> WhisperForConditionalGeneration:
    torch.manual_seed(0)
    return WhisperForConditionalGeneration(WhisperConfig(**TINY)).eval()


def _to_ct2(model: WhisperForConditionalGeneration) -> dict[str, torch.Tensor]:
    """HF -> CTranslate2 names, following assets.md (fused q/k/v with a zero k bias)."""
    sd, config = model.state_dict(), model.config
    ct2 = {"encoder/num_heads": torch.tensor(config.encoder_attention_heads, dtype=torch.int16),
           "decoder/num_heads": torch.tensor(config.decoder_attention_heads, dtype=torch.int16),
           "encoder/position_encodings/encodings": sd["model.encoder.embed_positions.weight"],
           "decoder/position_encodings/encodings": sd["model.decoder.embed_positions.weight"],
           "decoder/embeddings/weight": sd["model.decoder.embed_tokens.weight"]}

    def put(ct2_name, hf_name, params=(("weight", "weight"), ("bias", "bias"))):
        for ct2_param, hf_param in params:
            ct2[f"{ct2_name}/{ct2_param}"] = sd[f"{hf_name}.{hf_param}"]

    def norm(ct2_name, hf_name):
        put(ct2_name, hf_name, (("gamma", "weight"), ("beta", "bias")))

    def fused(ct2_name, hf_attn, parts):
        ct2[f"{ct2_name}/weight"] = torch.cat([sd[f"{hf_attn}.{p}.weight"] for p in parts])
        ct2[f"{ct2_name}/bias"] = torch.cat([
            torch.zeros(config.d_model) if p == "k_proj" else sd[f"{hf_attn}.{p}.bias"] for p in parts])

    for conv in ("conv1", "conv2"):
        put(f"encoder/{conv}", f"model.encoder.{conv}")
    for side, layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(layers):
            src, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            fused(f"{src}/self_attention/linear_0", f"{hf}.self_attn", ["q_proj", "k_proj", "v_proj"])
            put(f"{src}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            norm(f"{src}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            if side == "decoder":
                put(f"{src}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                fused(f"{src}/attention/linear_1", f"{hf}.encoder_attn", ["k_proj", "v_proj"])
                put(f"{src}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
                norm(f"{src}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            put(f"{src}/ffn/linear_0", f"{hf}.fc1")
            put(f"{src}/ffn/linear_1", f"{hf}.fc2")
            norm(f"{src}/ffn/layer_norm", f"{hf}.final_layer_norm")
    return ct2


def test_converter_round_trips_a_random_whisper_exactly():
    model = _tiny_whisper()
    converted = ctranslate2.whisper_state_dict(_to_ct2(model))
    expected = model.state_dict()
    assert set(converted) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(converted[name], tensor), name


def test_converted_config_rebuilds_the_same_model():
    model = _tiny_whisper()
    ct2 = _to_ct2(model)
    config = ctranslate2.whisper_config(ct2, SPECIAL)
    for key, value in TINY.items():
        assert getattr(config, key) == value, key
    assert (config.decoder_start_token_id, config.eos_token_id) == (51, 50)
    rebuilt = WhisperForConditionalGeneration(config).eval()
    rebuilt.load_state_dict(ctranslate2.whisper_state_dict(ct2), strict=True)
    features, tokens = torch.randn(1, 8, 60), torch.tensor([[51, 3, 4]])
    with torch.no_grad():
        assert torch.equal(rebuilt(features, decoder_input_ids=tokens).logits,
                           model(features, decoder_input_ids=tokens).logits)


def test_generation_config_knows_english_only_from_multilingual():
    model = _tiny_whisper()  # vocab 60: "multilingual" by the 51864 rule
    generation = ctranslate2.whisper_generation_config(model.config, SPECIAL, {"suppress_ids": [1, 2]})
    assert generation.is_multilingual and generation.no_timestamps_token_id == 57
    assert generation.lang_to_id == {"<|en|>": 52, "<|de|>": 53}  # not <|nospeech|>
    assert generation.task_to_id == {"translate": 54, "transcribe": 55}
    assert generation.suppress_tokens == [1, 2]
    model.config.vocab_size = ctranslate2.ENGLISH_ONLY_VOCAB
    assert not ctranslate2.whisper_generation_config(model.config, SPECIAL).is_multilingual


# ---------------------------------------------------------------------------------------------
# Short windows


def test_short_window_encoder_takes_fewer_frames_and_keeps_the_first_positions():
    model = _tiny_whisper()
    full_table = model.model.encoder.embed_positions.weight.clone()
    encoder = pretrained.shorten_encoder_window(model.model.encoder, window_seconds=0.2)  # 10 frames
    with torch.no_grad():
        out = encoder(torch.randn(2, 8, 20)).last_hidden_state
    assert out.shape == (2, 10, 16)
    assert torch.equal(encoder.embed_positions.weight, full_table[:10])
    assert model.config.max_source_positions == 30  # the shared config keeps the 30 s window
    with pytest.raises(ValueError, match="whole number"):
        pretrained.shorten_encoder_window(encoder, window_seconds=0.01 * 3)
    with pytest.raises(ValueError, match="between 1 and 10"):
        pretrained.shorten_encoder_window(encoder, window_seconds=1)


def test_feature_extractor_window():
    features = pretrained.whisper_feature_extractor(80, window_seconds=10)(
        np.zeros(16000 * 3, dtype=np.float32), sampling_rate=16000, return_tensors="pt").input_features
    assert features.shape == (1, 80, 1000)


# ---------------------------------------------------------------------------------------------
# Cache and asset errors


@pytest.fixture
def fake_asset(monkeypatch, tmp_path):
    monkeypatch.setenv("LALM_FAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "_verified_files", lambda asset: [])
    return {"fake": pretrained.PackagedAsset("pip install fake", (), "ab" * 32)}


def test_crash_during_conversion_leaves_no_cache(fake_asset, tmp_path):
    def crash(files, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        pretrained._cached("fake", fake_asset, "whisper", crash)
    assert list((tmp_path / "cache").iterdir()) == []  # neither the target nor a temporary


def test_cache_is_written_once_and_keyed_by_checksum(fake_asset, tmp_path):
    calls = []

    def convert(files, out):
        calls.append(out)
        (out / "config.json").write_text("{}")

    first = pretrained._cached("fake", fake_asset, "whisper", convert)
    second = pretrained._cached("fake", fake_asset, "whisper", convert)
    assert first == second and len(calls) == 1 and (first / "config.json").is_file()
    assert "abababababababab" in first.name and first.parent == tmp_path / "cache"
    assert [p.name for p in first.parent.iterdir()] == [first.name]


def test_missing_package_names_the_pip_command():
    asset = pretrained.PackagedAsset("pip install no-such-pkg==1.0", (("no_such_pkg_xyz", "model.bin"),), "0" * 64)
    with pytest.raises(pretrained.AssetMissingError, match="pip install no-such-pkg==1.0"):
        pretrained._verified_files(asset)
    with pytest.raises(ValueError, match="unknown packaged whisper 'huge'"):
        pretrained.load_whisper_encoder("packaged:huge")


def test_checksum_mismatch_is_rejected():
    asset = pretrained.PackagedAsset("pip install lalm-fast", (("lalm_fast", "nn.py"),), "0" * 64)
    with pytest.raises(pretrained.ChecksumError, match="expected 0000"):
        pretrained._verified_files(asset)


# ---------------------------------------------------------------------------------------------
# Asset tier: real packaged weights (each test skips with the install command when absent)

SENTENCE = "please call me tomorrow morning after the meeting"


def _require_packages(asset: pretrained.PackagedAsset):
    for module, _ in asset.parts:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"package {module!r} not installed ({asset.install})")


@pytest.fixture(scope="module")
def asset_cache(tmp_path_factory):
    """A fresh cache, so the asset tests exercise the conversion, not an old cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LALM_FAST_CACHE", str(tmp_path_factory.mktemp("lalm-fast-cache")))
        yield


def _synthesise(text: str, path) -> np.ndarray:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed (apt-get install -y espeak-ng sox)")
    subprocess.run(f'espeak-ng -v en-us -s 150 --stdout "{text}" | sox -t wav - -r 16000 -c 1 -b 16 "{path}"',
                   shell=True, check=True, capture_output=True)
    from scipy.io import wavfile

    rate, samples = wavfile.read(path)
    assert rate == 16000
    return samples.astype(np.float32) / 32768


@pytest.mark.asset
@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_packaged_whisper_transcribes_synthesised_speech(name, asset_cache, tmp_path):
    _require_packages(pretrained.WHISPER[name])
    audio = _synthesise(SENTENCE, tmp_path / "speech.wav")
    model, processor = pretrained.load_whisper_model(f"packaged:{name}")
    features = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    language = {} if name.endswith(".en") else {"language": "en", "task": "transcribe"}
    with torch.no_grad():
        tokens = model.generate(features, **language)
    transcript = processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)[0]
    assert wer([SENTENCE], [transcript]).wer <= 0.2, transcript

    encoder = pretrained.load_whisper_encoder(f"packaged:{name}", window_seconds=10)
    short = pretrained.whisper_feature_extractor(model.config.num_mel_bins, 10)(
        audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        assert encoder(short).last_hidden_state.shape == (1, 500, model.config.d_model)


@pytest.mark.asset
def test_packaged_smollm2_loads_and_its_cache_reloads_identically(asset_cache):
    asset = pretrained.CAUSAL_LM["smollm2-135m"]
    _require_packages(asset)
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is needed (pip install gguf)")
    from transformers import AutoModelForCausalLM

    gguf = asset.files()[0]
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    pretrained.load_causal_lm("packaged:smollm2-135m")  # converts and caches
    start = time.perf_counter()
    model, tokenizer = pretrained.load_causal_lm("packaged:smollm2-135m")
    reload_seconds = time.perf_counter() - start
    assert reload_seconds < 3, f"cached reload took {reload_seconds:.1f} s"
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**prompt).logits, reference(**prompt).logits)
