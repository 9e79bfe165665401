"""LoRA training of native transformers audio LLMs (NativeAudioLM, ``model.native`` in lalm_fast.training) on tiny
random configs, CPU, fp32; no downloads: every base model is saved to tmp_path with save_pretrained.

Per trainable model type: labels are exactly the target ids after the prompt; the loss is the mean cross-entropy
over them; a batch gives each sample its logits alone; only LoRA weights in the language model train; generate
runs; the adapter saved and reloaded gives the same logits. For Qwen2-Audio and AudioFlamingo3 saved as folders:
``train`` runs, an interrupted + resumed run ends bitwise equal to a straight one, and ``lalm-fast eval`` on the
final model reproduces the final evaluation's loss.
"""

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

import lalm_fast.integrations as li  # noqa: E402
from lalm_fast.integrations import native_lm  # noqa: E402
from lalm_fast.integrations.native_lm import TRAINABLE_MODEL_TYPES, NativeAudioLM  # noqa: E402
from lalm_fast.integrations.lora import lora_module_names  # noqa: E402
from tests.hf_tiny import CASES, waveforms  # noqa: E402

TARGETS = ["yes it is", "no", "say it again"]
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
        expected = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
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
    assert model.model.training is False or not any(m.training for n, m in model.model.named_modules()
                                                    if "audio" in n.split(".")[-1])

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
    _, plain = native("audioflamingo3")                      # no chat template: the prompt text itself
    assert plain.prompt_text("transcribe") == "<sound> Transcribe the audio."


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
