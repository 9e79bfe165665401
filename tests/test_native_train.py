"""LoRA training of native transformers audio LLMs (NativeAudioLM, ``model.native`` in lalm_fast.training) on tiny
random configs, CPU, fp32; no downloads: every base model is saved to tmp_path with save_pretrained.

Per trainable model type: labels are exactly the target ids after the prompt; the loss is the mean cross-entropy
over them; a batch gives each sample its logits alone; only LoRA weights in the language model train; generate
runs; the adapter saved and reloaded gives the same logits. For Qwen2-Audio and AudioFlamingo3 saved as folders:
``train`` runs, an interrupted + resumed run ends bitwise equal to a straight one, and ``lalm-fast eval`` on the
final model reproduces the final evaluation's loss.
"""

import json
import os

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")
pytest.importorskip("soundfile")

from safetensors.torch import load_file  # noqa: E402

import lalm_fast.integrations as li  # noqa: E402
from lalm_fast import cli  # noqa: E402
from lalm_fast.integrations import native_lm  # noqa: E402
from lalm_fast.integrations.native_lm import TRAINABLE_MODEL_TYPES, NativeAudioLM  # noqa: E402
from lalm_fast.integrations.lora import lora_module_names  # noqa: E402
from lalm_fast.models.tiny import WORDS as TINY_WORDS  # noqa: E402
from lalm_fast.settings import SettingError  # noqa: E402
from lalm_fast.training import TrainConfig, latest_checkpoint, load_trained, loop, train  # noqa: E402
from tests import hf_tiny  # noqa: E402
from tests.hf_tiny import CASES, waveforms  # noqa: E402

TARGETS = ["yes it is", "no", "say it again"]
# The synthetic clips' transcripts (lalm_fast.training.make_synthetic) use these words.
WORDS = hf_tiny.WORDS + [w for w in TINY_WORDS[5:] if w not in hf_tiny.WORDS]
EOS = "<|endoftext|>"
READS_AUDIO_PADDING = ("fun_asr_nano", "granite_speech", "granite_speech_plus")


def native(model_type, compressor="uniform:2", lora=None, **options):
    case = CASES[model_type]
    processor = case.processor()
    if processor.tokenizer.eos_token_id is None:
        processor.tokenizer.eos_token = "again"  # the tiny vocabularies have no eos; any word will do here
    return case, NativeAudioLM(case.model(), processor, compressor, lora={"r": 2, "dropout": 0.0, **(lora or {})},
                               **options)


def _randomize_lora(model, seed=1):
    torch.manual_seed(seed)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)   # lora_B starts at zero: make the adapter matter


# -- per model type, in memory ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", TRAINABLE_MODEL_TYPES)
def test_labels_loss_batching_lora_and_generate(model_type, tmp_path):
    case, model = native(model_type)
    tokenizer = model.tokenizer
    waves = waveforms(case.seconds, case.sampling_rate)
    _randomize_lora(model)
    model.eval()
    out = model(waves, targets=TARGETS)
    inputs = out.inputs

    # Labels: each target's ids and eos, last among the sample's tokens (right padding), -100 elsewhere.
    for row, target in enumerate(TARGETS):
        valid = inputs.attention_mask[row].bool()
        assert not valid[:valid.sum()].logical_not().any()            # right padding
        ids, labels = inputs.input_ids[row][valid].tolist(), inputs.labels[row][valid].tolist()
        expected = tokenizer(target, add_special_tokens=False)["input_ids"] + [model.end_token_id]
        assert ids[-len(expected):] == expected
        assert labels == [-100] * (len(ids) - len(expected)) + expected
        assert (inputs.labels[row][~valid] == -100).all()

    # The placeholder count of each audio is the compressor's: ceil(native / 2) of the unpatched processor's.
    unpatched = case.processor()
    token = unpatched.tokenizer.convert_tokens_to_ids(unpatched.audio_token)
    plain = unpatched(text=[case.prompt] * len(waves), audio=waves, sampling_rate=case.sampling_rate,
                      return_tensors="pt", text_kwargs={"padding": True})
    counts = (plain["input_ids"] == token).sum(-1)
    assert inputs.audio_lengths.tolist() == ((counts + 1) // 2).tolist()

    # The loss is the mean cross-entropy over the target tokens.
    shifted = inputs.labels[:, 1:]
    manual = torch.nn.functional.cross_entropy(out.logits[:, :-1][shifted != -100].float(), shifted[shifted != -100])
    torch.testing.assert_close(out.loss, manual, rtol=1e-5, atol=1e-6)

    # A batch gives each sample the logits it gets alone. The Granite and FunASR encoders read the audio
    # features' padding (no mask; so do the unwrapped models), so there only the longest clip, padded alike in
    # both, can match.
    rows = [0] if model_type in READS_AUDIO_PADDING else range(len(waves))
    assert case.seconds[0] == max(case.seconds)
    for row in rows:
        alone = model([waves[row]], targets=[TARGETS[row]]).logits[0]
        valid = inputs.attention_mask[row].bool()
        torch.testing.assert_close(out.logits[row][valid], alone, rtol=1e-4, atol=1e-5)

    # Only LoRA weights inside the language model train, and all of them get a gradient.
    model.train()
    model(waves, targets=TARGETS).loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name and ".language_model." in name for name in trainable)
    assert all(p.grad is not None for p in trainable.values())
    assert all("language_model" in name for name in lora_module_names(model.model))
    lm = next(n for n, _ in model.model.named_modules() if n.endswith(".language_model"))
    modes = {n: m.training for n, m in model.model.named_modules()}
    assert all(training == (n == lm or n.startswith(lm + ".")) for n, training in modes.items())  # tower: eval

    model.eval()
    texts = model.generate(waves, max_new_tokens=3)
    assert len(texts) == len(waves) and all(isinstance(t, str) for t in texts)

    # Saved and reloaded onto a fresh base: the same logits.
    model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / native_lm.CONFIG_FILE).read_text())["compressor"] == {"kind": "uniform",
                                                                                                    "k": 2}
    processor = case.processor()
    processor.tokenizer.eos_token = tokenizer.eos_token
    reloaded = NativeAudioLM.from_pretrained(tmp_path / "adapter", case.model(), processor)
    torch.testing.assert_close(reloaded(waves, targets=TARGETS).logits, out.logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_type", ["qwen2_audio", "audioflamingo3"])
def test_content_adaptive_compressor_trains_with_expanded_placeholders(model_type):
    spec = "segment:prominence=0.05,min_len=2"
    case, model = native(model_type, spec)
    waves = waveforms(case.seconds, case.sampling_rate)
    model.eval()
    out = model(waves, targets=TARGETS)
    counts = model.audio_token_counts(waves)
    assert out.inputs.audio_lengths.tolist() == counts.tolist() and counts.max() > 1
    for row, target in enumerate(TARGETS):     # labels still aligned after the expansion
        labels = out.inputs.labels[row][out.inputs.labels[row] != -100].tolist()
        assert labels == model.target_ids(target)
    assert len(model.generate(waves, max_new_tokens=2)) == len(waves)


def test_prompt_uses_the_chat_template_and_a_system_message():
    case, model = native("qwen2_audio", prompts={"system": "say yes", "transcribe": "what is <audio> this"})
    text = model.prompt_text("transcribe")
    assert text.startswith("<|im_start|>system\nsay yes<|im_end|>\n<|im_start|>user\n")
    assert "what is <|audio_bos|><|AUDIO|><|audio_eos|> this<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert model.end_token_id == model.tokenizer.eos_token_id       # <|im_end|> is not a token of this vocabulary
    _, plain = native("audioflamingo3")                      # no chat template: the prompt text itself
    assert plain.prompt_text("transcribe") == "<sound> Transcribe the audio."


def test_targets_end_with_the_token_that_ends_an_assistant_turn():
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    specials = ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    tokenizer = hf_tiny.tokenizer(specials, eos_token="<|endoftext|>")
    processor = Qwen2AudioProcessor(WhisperFeatureExtractor(feature_size=hf_tiny.MEL, chunk_length=1), tokenizer)
    model = NativeAudioLM(CASES["qwen2_audio"].model(), processor, "uniform:2", lora={"r": 2})
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.end_token_id == im_end != tokenizer.eos_token_id
    assert model.target_ids("yes no") == tokenizer("yes no", add_special_tokens=False)["input_ids"] + [im_end]


def test_bad_inputs_raise_one_clear_error():
    for model_type in ("gemma4", "vibevoice_asr"):
        with pytest.raises(ValueError, match=f"training a native '{model_type}' model is not supported; supported "
                                             "model types: .*qwen2_audio.*compresses with"):
            native(model_type)
    with pytest.raises(ValueError, match="does not support Linear, which has no transformers config"):
        NativeAudioLM(torch.nn.Linear(2, 2), CASES["qwen2_audio"].processor(), "uniform:2")
    case = CASES["qwen2_audio"]
    with pytest.raises(ValueError, match="unknown compressor kind 'unifrom'"):
        NativeAudioLM(case.model(), case.processor(), "unifrom:2")
    with pytest.raises(ValueError, match="tokenizer has no eos token"):
        NativeAudioLM(case.model(), case.processor(), "uniform:2", lora={"r": 2})
    with pytest.raises(ValueError, match="model.lora takes 'alpha' and 'dropout'"):
        native("qwen2_audio", lora={"lora_alpha": 4})
    with pytest.raises(ValueError, match="cannot be put on the language model: .*no_such_proj"):
        native("qwen2_audio", lora={"target_modules": ["no_such_proj"]})
    _, model = native("qwen2_audio")
    with pytest.raises(ValueError, match="exactly once"):
        model.prompt_text(prompt="no audio here")
    with pytest.raises(ValueError, match="prompts.system needs a chat template"):
        native("audioflamingo3", prompts={"system": "be brief"})
    with pytest.raises(ValueError, match=r"2 sample_lengths for 3 waveforms"):
        model(waveforms(case.seconds), [10, 10])
    with pytest.raises(ValueError, match="waveforms must be \\[batch, samples\\]"):
        model(torch.zeros(2, 1, 100))


def test_a_builtin_adapter_is_merged_before_the_new_lora():
    """Granite Speech checkpoints ship a LoRA that transformers loads into the model and enables whenever audio
    is present: it is merged into the base weights, so the audio path computes what it did with it enabled."""
    from peft import LoraConfig

    case = CASES["granite_speech"]
    base = case.model()
    base.add_adapter(LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    processor = case.processor()
    processor.tokenizer.eos_token = "again"
    batch = case.batch(li.patch_processor(case.processor(), "uniform:2"))
    with li.compression(base, "uniform:2"), torch.no_grad():
        expected = base(**batch).logits
    model = NativeAudioLM(base, processor, "uniform:2", lora={"r": 2})
    assert not base._hf_peft_config_loaded
    names = lora_module_names(model.model)                       # only the new adapter is left, in the LM
    assert names and all(".language_model." in name for name in names)
    assert all(list(model.model.get_submodule(name).lora_A) == ["default"] for name in names)
    with torch.no_grad():
        got = model.model(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


# -- lalm-fast train on saved folders ------------------------------------------------------------------------------


def save_qwen2_audio(folder):
    from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                              WhisperFeatureExtractor)
    tokenizer = hf_tiny.tokenizer(["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", EOS], words=WORDS, eos_token=EOS)
    torch.manual_seed(0)
    config = Qwen2AudioConfig(audio_config=dict(model_type="qwen2_audio_encoder", **hf_tiny._whisper_encoder()),
                              text_config=hf_tiny.text_config("qwen2", vocab_size=len(tokenizer), bos_token_id=None,
                                                              eos_token_id=tokenizer.eos_token_id),
                              audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    Qwen2AudioForConditionalGeneration(config).save_pretrained(folder)
    extractor = WhisperFeatureExtractor(feature_size=hf_tiny.MEL, chunk_length=1)     # a 1 s window
    Qwen2AudioProcessor(extractor, tokenizer).save_pretrained(folder)
    return str(folder)


def save_audioflamingo3(folder):
    from transformers import (AudioFlamingo3Config, AudioFlamingo3ForConditionalGeneration, AudioFlamingo3Processor,
                              WhisperFeatureExtractor)
    tokenizer = hf_tiny.tokenizer(["<sound>", EOS], words=WORDS, eos_token=EOS)
    torch.manual_seed(0)
    config = AudioFlamingo3Config(audio_config=hf_tiny._whisper_encoder(),
                                  text_config=hf_tiny.text_config(vocab_size=len(tokenizer), bos_token_id=None,
                                                                  eos_token_id=tokenizer.eos_token_id),
                                  audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"))
    AudioFlamingo3ForConditionalGeneration(config).save_pretrained(folder)
    extractor = WhisperFeatureExtractor(feature_size=hf_tiny.MEL, chunk_length=1)
    AudioFlamingo3Processor(extractor, tokenizer, audio_token="<sound>").save_pretrained(folder)
    return str(folder)


FOLDERS = {"qwen2_audio": save_qwen2_audio, "audioflamingo3": save_audioflamingo3}


def native_config(base, output_dir, **changes):
    data = {"model": {"native": base, "compressor": "uniform:2", "lora": {"r": 4, "alpha": 8, "dropout": 0.2},
                      "window_seconds": 1.0},
            "data": {"train": "synthetic:8", "eval": "synthetic:4", "batch_size": 4, "eval_generate": 4,
                     "max_new_tokens": 4},
            "optim": {"lr": 0.01, "total_steps": 6, "grad_accum": 2, "warmup_steps": 1},
            "run": {"output_dir": str(output_dir), "eval_every": 0, "save_every": 2, "progress": False}}
    for key, value in changes.items():
        section, name = key.split(".")
        data[section][name] = value
    return data


@pytest.mark.parametrize("model_type", sorted(FOLDERS))
def test_train_resume_exactly_and_evaluate(model_type, tmp_path, monkeypatch):
    base = FOLDERS[model_type](tmp_path / "base")

    def config(name):
        return TrainConfig.from_dict(native_config(base, tmp_path / name))

    straight = train(config("straight"))
    assert straight.step == 6 and straight.evals and straight.final_dir is not None

    original = loop._Loop._periodic

    def interrupt_after_step_3(self, position):
        original(self, position)
        if position.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop._Loop, "_periodic", interrupt_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(config("resumed"))
    assert latest_checkpoint(tmp_path / "resumed").name == "step-00000003"
    monkeypatch.setattr(loop._Loop, "_periodic", original)
    resumed = train(config("resumed"), resume=True)

    assert resumed.losses == straight.losses[3:]
    expected = load_file(latest_checkpoint(tmp_path / "straight") / "trainable.safetensors")
    got = load_file(latest_checkpoint(tmp_path / "resumed") / "trainable.safetensors")
    assert expected.keys() == got.keys() and all("lora_" in name for name in got)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert not (tmp_path / "straight" / "feature_cache").exists()          # the native tower ran every step

    # The final folder reloads (base from the recorded folder) and scores as the run's last evaluation did.
    model, spec = load_trained(straight.final_dir)
    assert isinstance(model, NativeAudioLM) and spec.native == base
    manifest = tmp_path / "straight" / "synthetic" / "manifest.jsonl"      # the 4 eval clips, written last
    assert cli.main(["eval", "--model", str(straight.final_dir), "--manifest", str(manifest),
                     "--out", str(tmp_path / "eval")]) == 0
    row = json.loads((tmp_path / "eval" / "eval.json").read_text())["rows"][0]
    assert row["name"].startswith(base) and abs(row["extra"]["loss"] - straight.evals[-1]["loss"]) < 1e-4
    predictions = (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 4 and all(json.loads(line)["audio_tokens"] >= 1 for line in predictions)


def test_native_config_errors_name_the_key(tmp_path, capsys):
    base = save_qwen2_audio(tmp_path / "base")
    voxtral = tmp_path / "voxtral"
    voxtral.mkdir()
    (voxtral / "config.json").write_text(json.dumps({"model_type": "voxtral"}))
    capsys.readouterr()                                   # save_pretrained's progress bars
    cases = [
        ({"model.native": str(voxtral)}, "model.native is a 'voxtral' model; native training supports model types"),
        ({"model.native": str(tmp_path / "nothing")}, "model.native must be a local transformers model folder"),
        ({"model.lora": None}, "model.lora must be set with model.native"),
        ({"model.freeze_encoder": False}, "model.freeze_encoder must be true with model.native"),
        ({"data.cache": True}, "data.cache must be false or null with model.native"),
        ({"model.compressor": "unifrom:2"}, "model.compressor is not a valid compressor"),
        ({"model.init_from": str(tmp_path)}, "model.init_from must be null with model.native"),
    ]
    for changes, words in cases:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(native_config(base, tmp_path / "run", **changes)))
        with pytest.raises(SettingError, match=words.replace("(", r"\(")):
            TrainConfig.from_file(path)
        assert cli.main(["train", "--config", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err
    data = native_config(base, tmp_path / "run")
    data["align"] = {"ctc_steps": 10}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(SettingError, match="align.ctc_steps must be 0 with model.native"):
        TrainConfig.from_file(tmp_path / "config.json")


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


@pytest.mark.parametrize("name, model_type", [("qwen2-audio-7b-lora.json", "qwen2_audio"),
                                              ("granite-speech-lora.json", "granite_speech")])
def test_gpu_templates_parse(name, model_type, tmp_path):
    """The GPU templates parse and pass every check once their /path/to/ placeholders name real paths."""
    data = json.loads(open(os.path.join(CONFIGS, name)).read())
    assert data["run"]["mixed_precision"] == "bf16" and data["model"]["lm_dtype"] == "bfloat16"
    native = tmp_path / "model"
    native.mkdir()
    (native / "config.json").write_text(json.dumps({"model_type": model_type}))
    data["model"]["native"] = str(native)
    for key in ("train", "eval"):
        (tmp_path / f"{key}.jsonl").write_text("")
        data["data"][key] = str(tmp_path / f"{key}.jsonl")
    path = tmp_path / name
    path.write_text(json.dumps(data))
    config = TrainConfig.from_file(path)
    assert config.model.native == str(native) and config.model.lora["r"] >= 8
