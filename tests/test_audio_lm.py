"""lalm_fast.models.AudioLM on tiny random-init Whisper encoder + Llama LM (no downloads)."""

import json
import os

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from transformers import LlamaForCausalLM, WhisperModel  # noqa: E402

from lalm_fast.models import AudioLM, AudioLMConfig, MLPProjector  # noqa: E402
from lalm_fast.models.audio_lm import CONFIG_FILE, IGNORE_INDEX, PROJECTOR_FILE  # noqa: E402
from lalm_fast.models.tiny import MEL_BINS, MEL_FRAMES, PROMPTS, tiny_encoder, tiny_lm, tiny_tokenizer  # noqa: E402
from lalm_fast.models.tiny import tiny_audio_lm as tiny_model  # noqa: E402
from lalm_fast.nn import AudioCompressor, CompressedAudio  # noqa: E402


def batch(lengths=(100, 37, 64), seed=1):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), MEL_BINS, MEL_FRAMES, generator=generator)
    frame_lengths = torch.tensor(lengths)
    features *= (torch.arange(MEL_FRAMES) < frame_lengths[:, None, None])  # zero padding, as the extractor does
    return features, frame_lengths


TARGETS = ["the cat sat", "a dog ran", "red bird sang"]


def train(model, features, frame_lengths, targets, steps, lr=1e-2):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(features, frame_lengths, targets=targets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


# ----- training ---------------------------------------------------------------------------------


def test_a_few_steps_lower_the_loss():
    model = tiny_model()
    model.add_lora(r=8)
    features, frame_lengths = batch()
    losses = train(model, features, frame_lengths, TARGETS, steps=5)
    assert losses[-1] < losses[0] - 0.1


def test_overfits_four_utterances_to_wer_zero():
    """Issue 5: a tiny model overfits 4 utterances so that greedy decoding gives their targets."""
    model = tiny_model("uniform:4")
    model.add_lora(r=16, alpha=32, dropout=0.0)
    features, frame_lengths = batch((100, 60, 80, 45))
    targets = TARGETS + ["blue fish swam"]
    before = model(features, frame_lengths, targets=targets).loss.item()
    losses = train(model, features, frame_lengths, targets, steps=120)
    assert losses[-1] < before
    assert model.generate(features, frame_lengths, max_new_tokens=5) == targets


# ----- variable-length batches ------------------------------------------------------------------


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("compressor", ["uniform:3", "segment:prominence=0.05"])
def test_batched_equals_alone(padding_side, compressor):
    model = tiny_model(compressor, padding_side).eval()
    features, frame_lengths = batch()
    tasks = ["transcribe", {"task": "translate", "lang": "german"}, "transcribe"]
    with torch.no_grad():
        together = model(features, frame_lengths, tasks=tasks, targets=TARGETS)
        mask = together.inputs.attention_mask.bool()
        assert len(set(together.inputs.audio_lengths.tolist())) > 1  # the counts really differ
        for i in range(len(TARGETS)):
            alone = model(features[i:i + 1], frame_lengths[i:i + 1], tasks=tasks[i:i + 1], targets=TARGETS[i:i + 1])
            assert alone.inputs.attention_mask.all()
            torch.testing.assert_close(together.logits[i][mask[i]], alone.logits[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(together.inputs.labels[i][mask[i]], alone.inputs.labels[0])


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_attention_mask_and_labels(padding_side):
    model = tiny_model("uniform:3", padding_side)
    tokenizer = model.tokenizer
    features, frame_lengths = batch()
    inputs = model.build_inputs(features, frame_lengths, tasks="transcribe", targets=TARGETS)
    audio = inputs.audio_lengths.tolist()
    assert audio == [17, 7, 11]  # ceil(ceil(L / 2) / 3)
    prompt = 1 + 1  # <s> transcribe, then the audio, no suffix
    for i, target in enumerate(TARGETS):
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        length = prompt + audio[i] + len(target_ids)
        assert int(inputs.attention_mask[i].sum()) == length
        real = inputs.attention_mask[i].bool()
        first_real = int(real.nonzero()[0])
        if padding_side == "left":
            assert not real[:first_real].any() and real[first_real:].all()
        else:
            assert first_real == 0 and real[:length].all() and not real[length:].any()
        labels = inputs.labels[i][real]
        assert (labels[:prompt + audio[i]] == IGNORE_INDEX).all()
        assert labels[prompt + audio[i]:].tolist() == target_ids
        assert (inputs.labels[i][~real] == IGNORE_INDEX).all()
        assert inputs.position_ids[i][real].tolist() == list(range(length))


def test_generate_batched_equals_alone():
    model = tiny_model("uniform:3", "right").eval()  # generate pads left whatever the tokenizer says
    features, frame_lengths = batch()
    together = model.generate(features, frame_lengths, max_new_tokens=4)
    alone = [model.generate(features[i:i + 1], frame_lengths[i:i + 1], max_new_tokens=4)[0] for i in range(3)]
    assert together == alone
    assert len(set(together)) > 1  # the audio steers the output


def test_windowed_long_audio():
    """config.window: 200 mel frames through an encoder that takes 100 give twice the tokens."""
    model = tiny_model("uniform:5", window=MEL_FRAMES)
    features = torch.randn(2, MEL_BINS, 2 * MEL_FRAMES)
    out = model.encode_audio(features, torch.tensor([200, 130]))
    assert out.lengths.tolist() == [20, 10 + 3]


# ----- LoRA scope -------------------------------------------------------------------------------


def test_lora_on_the_lm_only():
    model = tiny_model()
    model.add_lora(r=4, target_modules=["q_proj", "v_proj"])
    lora_modules = [name for name, module in model.named_modules() if hasattr(module, "lora_A")]
    assert lora_modules and all(name.startswith("lm.") for name in lora_modules)
    assert not any("lora" in name for name, _ in model.encoder.named_parameters())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    expected = {name for name, _ in model.named_parameters() if "lora_" in name or name.startswith("projector.")}
    assert trainable == expected
    assert model.config.lora["target_modules"] == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="already has a LoRA"):
        model.add_lora()


def test_frozen_encoder_gets_no_gradient_and_stays_in_eval():
    model = tiny_model()
    model.train()
    assert not model.encoder.training and model.projector.training
    loss = model(*batch(), targets=TARGETS).loss
    loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.lm.parameters())  # freeze_lm: projector-only alignment
    assert all(p.grad is not None for p in model.projector.parameters())


# ----- save / load ------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [True, False])
def test_save_and_load_round_trip(tmp_path, lora):
    model = tiny_model("segment:rate=3")
    if lora:
        model.add_lora(r=4)
    features, frame_lengths = batch()
    train(model, features, frame_lengths, TARGETS, steps=3)  # LoRA B starts at zero: make it matter
    with torch.no_grad():
        expected = model(features, frame_lengths, targets=TARGETS)
    model.save_pretrained(tmp_path / "saved")

    files = set(os.listdir(tmp_path / "saved"))
    assert {CONFIG_FILE, PROJECTOR_FILE} <= files
    assert ({"adapter_config.json", "adapter_model.safetensors"} <= files) == lora
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no staging left behind
    saved = json.loads((tmp_path / "saved" / CONFIG_FILE).read_text())
    assert saved["compressor"] == {"kind": "segment", "rate": 3}
    assert saved["prompts"] == PROMPTS

    fresh = tiny_model(seed=0)  # same base weights as `model` was built with
    loaded = AudioLM.from_pretrained(tmp_path / "saved", encoder=fresh.encoder, lm=fresh.lm,
                                     tokenizer=fresh.tokenizer).eval()
    assert loaded.config == model.config
    with torch.no_grad():
        got = loaded(features, frame_lengths, targets=TARGETS)
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.loss, expected.loss)


def test_load_from_local_sources(tmp_path):
    """Base weights are referenced by source, not copied: from_pretrained loads them from there."""
    torch.manual_seed(0)
    encoder_model = WhisperModel(tiny_encoder().config)
    lm, tokenizer = tiny_lm(), tiny_tokenizer()
    for obj, name in ((encoder_model, "encoder"), (lm, "lm"), (tokenizer, "lm")):
        obj.save_pretrained(tmp_path / name)
    encoder_model = WhisperModel.from_pretrained(tmp_path / "encoder")
    lm = LlamaForCausalLM.from_pretrained(tmp_path / "lm")
    model = AudioLM(encoder_model.get_encoder(), "uniform:2", MLPProjector(16, 32), lm, tokenizer,
                    AudioLMConfig(prompts=dict(PROMPTS), encoder=str(tmp_path / "encoder"), lm=str(tmp_path / "lm")))
    model.add_lora(r=4)
    model.save_pretrained(tmp_path / "run")
    assert not any(name.endswith(".safetensors") and "adapter" not in name and name != PROJECTOR_FILE
                   for name in os.listdir(tmp_path / "run"))
    loaded = AudioLM.from_pretrained(tmp_path / "run").eval()
    features, frame_lengths = batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(features, frame_lengths).logits, model.eval()(features, frame_lengths).logits)


def test_a_model_sharing_another_models_lora_loads_it_from_there(tmp_path):
    model = tiny_model("uniform:2")
    model.add_lora(r=4)
    features, frame_lengths = batch()
    train(model, features, frame_lengths, TARGETS, steps=3)
    model.save_pretrained(tmp_path / "base")
    model.save_pretrained(tmp_path / "sharer")
    config = json.loads((tmp_path / "sharer" / CONFIG_FILE).read_text())
    (tmp_path / "sharer" / CONFIG_FILE).write_text(json.dumps({**config, "lora_dir": "../base"}))
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / "sharer" / name).unlink()
    with torch.no_grad():
        expected = model.eval()(features, frame_lengths).logits
        fresh = tiny_model(seed=0)
        loaded = AudioLM.from_pretrained(tmp_path / "sharer", encoder=fresh.encoder, lm=fresh.lm,
                                         tokenizer=fresh.tokenizer).eval()
        torch.testing.assert_close(loaded(features, frame_lengths).logits, expected)
    loaded.save_pretrained(tmp_path / "saved-again")  # a standalone copy: its own LoRA, no lora_dir
    assert json.loads((tmp_path / "saved-again" / CONFIG_FILE).read_text())["lora_dir"] is None
    assert (tmp_path / "saved-again" / "adapter_model.safetensors").exists()
    (tmp_path / "sharer" / CONFIG_FILE).write_text(json.dumps({**config, "lora_dir": "../gone"}))
    with pytest.raises(ValueError, match="lora_dir '../gone'.*holds no LoRA adapter"):
        AudioLM.from_pretrained(tmp_path / "sharer", encoder=fresh.encoder, lm=fresh.lm, tokenizer=fresh.tokenizer)


def test_load_rejects_a_folder_without_config(tmp_path):
    with pytest.raises(ValueError, match=CONFIG_FILE):
        AudioLM.from_pretrained(tmp_path)


# ----- clear errors -----------------------------------------------------------------------------


def test_projector_in_dim_must_match_the_encoder():
    with pytest.raises(ValueError, match="in_dim 24 does not match the encoder's hidden size 16"):
        AudioLM(tiny_encoder(), "none", MLPProjector(24, 32), tiny_lm(), tiny_tokenizer())


class ConvEncoder(torch.nn.Module):
    """A plain encoder without an HF config (its width is only seen on the first batch)."""

    def __init__(self, width):
        super().__init__()
        self.conv = torch.nn.Conv1d(MEL_BINS, width, 3, stride=2, padding=1)

    def forward(self, features):
        return self.conv(features).transpose(1, 2)  # a bare tensor [B, T, D]


def test_plain_tensor_encoders_work_and_are_checked_at_run_time():
    model = AudioLM(ConvEncoder(16), "uniform:2", MLPProjector(16, 32), tiny_lm(), tiny_tokenizer())
    assert model(*batch()).inputs.audio_lengths.tolist() == [25, 10, 16]
    conv = ConvEncoder(12)
    model = AudioLM(lambda features: conv(features), "none", MLPProjector(16, 32), tiny_lm(), tiny_tokenizer())
    with pytest.raises(ValueError, match="encoder returned hidden size 12"):
        model(*batch())


def test_projector_out_dim_must_match_the_lm():
    with pytest.raises(ValueError, match="out_dim 48 does not match the LM's hidden size 32"):
        AudioLM(tiny_encoder(), "none", MLPProjector(16, 48), tiny_lm(), tiny_tokenizer())


class Widen(AudioCompressor):
    kind = "widen"

    def forward(self, x, lengths=None, attention_mask=None):
        return CompressedAudio(torch.cat([x, x], -1), lengths, torch.zeros(*x.shape[:2], 2, dtype=torch.long))


def test_compressor_must_keep_the_feature_size():
    model = AudioLM(tiny_encoder(), Widen(), MLPProjector(16, 32), tiny_lm(), tiny_tokenizer())
    with pytest.raises(ValueError, match="changed the feature size from 16 to 32"):
        model(*batch())


def test_missing_pad_token_becomes_eos_with_a_warning():
    tokenizer = tiny_tokenizer(pad=False)
    with pytest.warns(UserWarning, match="no pad token"):
        AudioLM(tiny_encoder(), "none", MLPProjector(16, 32), tiny_lm(), tokenizer)
    assert tokenizer.pad_token == "</s>"


def test_prompt_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="unknown task 'summarise'"):
        model(*batch(), tasks="summarise")
    with pytest.raises(ValueError, match="needs the field 'lang'"):
        model(*batch(), tasks="translate")
    with pytest.raises(ValueError, match="exactly once"):
        model(*batch(), prompts="no audio here")
    with pytest.raises(ValueError, match="one entry per sample"):
        model(*batch(), targets=TARGETS[:2])
    with pytest.raises(ValueError, match="exactly once"):
        AudioLM(tiny_encoder(), "none", MLPProjector(16, 32), tiny_lm(), tiny_tokenizer(),
                AudioLMConfig(prompts={"x": "<audio> <audio>"}))


def test_projector_shapes_and_config():
    projector = MLPProjector(16, 32, hidden=[8, 24], activation="silu")
    assert projector(torch.randn(2, 5, 16)).shape == (2, 5, 32)
    assert MLPProjector(**projector.config()).config() == projector.config() == {
        "in_dim": 16, "out_dim": 32, "hidden": [8, 24], "layers": 3, "activation": "silu"}
    assert len(MLPProjector(16, 32, layers=1)) == 1
    with pytest.raises(ValueError, match="unknown projector activation"):
        MLPProjector(16, 32, activation="swish2")


def test_config_json_round_trip():
    config = AudioLMConfig(encoder="openai/whisper-small", lm="Qwen/Qwen2.5-0.5B",
                           compressor={"kind": "uniform", "k": 3},
                           lora={"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj"]}, window=3000)
    assert AudioLMConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown AudioLMConfig fields"):
        AudioLMConfig.from_dict({"encoder": "x", "bogus": 1})


# ----- precomputed encoder states (feature cache) ----------------------------------------------


def encoder_states(model, features, frame_lengths):
    """What a feature cache holds: the encoder's outputs [B, T, D] and valid encoder frames."""
    with torch.no_grad():
        hidden = model.encoder(features).last_hidden_state
    return hidden, model.encoder_lengths(frame_lengths, hidden.shape[1])


@pytest.mark.parametrize("compressor", ["uniform:3", "segment:prominence=0.05"])
def test_encoder_states_give_the_same_logits_as_features(compressor):
    model = tiny_model(compressor).eval()
    features, frame_lengths = batch()
    states, lengths = encoder_states(model, features, frame_lengths)
    with torch.no_grad():
        normal = model(features, frame_lengths, targets=TARGETS)
        cached = model(encoder_states=states, encoder_lengths=lengths, targets=TARGETS)
        # float16 on disk: the states path casts them back to the encoder's dtype.
        rounded = model(encoder_states=states.half(), encoder_lengths=lengths, targets=TARGETS)
        reference = model(encoder_states=states.half().float(), encoder_lengths=lengths, targets=TARGETS)
    assert torch.equal(cached.inputs.audio_lengths, normal.inputs.audio_lengths)
    assert torch.equal(cached.inputs.labels, normal.inputs.labels)
    assert torch.allclose(cached.logits, normal.logits, atol=1e-5)
    assert torch.allclose(cached.loss, normal.loss, atol=1e-6)
    assert torch.allclose(rounded.logits, reference.logits, atol=1e-5)
    assert torch.allclose(rounded.logits, normal.logits, atol=1e-2)  # fp16 rounding of the states only
    assert (model.generate(features, frame_lengths, max_new_tokens=4)
            == model.generate(encoder_states=states, encoder_lengths=lengths, max_new_tokens=4))


def test_encoder_states_of_windowed_long_audio():
    """With config.window, joined per-window encoder outputs are re-cut into the same windows."""
    model = tiny_model("uniform:5", window=MEL_FRAMES).eval()
    features = torch.randn(2, MEL_BINS, 2 * MEL_FRAMES)
    frame_lengths = torch.tensor([200, 130])
    with torch.no_grad():
        halves = [model.encoder(features[..., i * MEL_FRAMES:(i + 1) * MEL_FRAMES]).last_hidden_state
                  for i in range(2)]
    states, lengths = torch.cat(halves, 1), model.encoder_lengths(frame_lengths)
    normal = model.encode_audio(features, frame_lengths)
    cached = model.compress_states(states, lengths)
    assert cached.lengths.tolist() == normal.lengths.tolist() == [20, 13]
    torch.testing.assert_close(cached.values, normal.values, rtol=0, atol=1e-6)
    assert torch.equal(cached.spans, normal.spans)
    with torch.no_grad():
        assert torch.allclose(model(encoder_states=states, encoder_lengths=lengths, targets=TARGETS[:2]).logits,
                              model(features, frame_lengths, targets=TARGETS[:2]).logits, atol=1e-5)


def test_encoder_states_skip_the_encoder_and_train_the_projector():
    model = tiny_model()
    model.add_lora(r=4)
    features, frame_lengths = batch()
    states, lengths = encoder_states(model, features, frame_lengths)
    calls = []
    model.encoder.register_forward_pre_hook(lambda *args: calls.append(1))
    out = model(encoder_states=states, encoder_lengths=lengths, targets=TARGETS)
    out.loss.backward()
    assert calls == []
    assert model.projector[0].weight.grad is not None


def test_audio_inputs_must_be_features_or_states():
    model = tiny_model()
    features, frame_lengths = batch()
    states, lengths = encoder_states(model, features, frame_lengths)
    with pytest.raises(ValueError, match="not both"):
        model(features, frame_lengths, encoder_states=states, encoder_lengths=lengths)
    with pytest.raises(ValueError, match="need encoder_lengths"):
        model(encoder_states=states)
    with pytest.raises(ValueError, match="without encoder_states"):
        model(features, frame_lengths, encoder_lengths=lengths)
    with pytest.raises(ValueError, match="pass input_features and frame_lengths"):
        model(features)
