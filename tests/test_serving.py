"""Compressed audio embeddings for serving engines (lalm_fast.integrations.serving.audio_embeds) on tiny random
models of every supported type, CPU, fp32: one tensor per audio, ``[output_lengths(native), hidden]``, and for
Qwen2-Audio, AudioFlamingo3 and Granite Speech exactly what the compressed model puts onto its placeholders (the
logits from ``inputs_embeds`` built with them equal the model's own)."""

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

import lalm_fast.integrations as li  # noqa: E402
from lalm_fast.integrations._placeholders import placeholder_runs  # noqa: E402
from lalm_fast.integrations.native_lm import NativeAudioLM  # noqa: E402
from lalm_fast.integrations.serving import audio_embeds  # noqa: E402
from tests.hf_tiny import CASES, waveforms  # noqa: E402


def _hidden(model) -> int:
    return model.get_input_embeddings().embedding_dim


def _native_counts(case, model, processor) -> list[int]:
    adapter = li.adapter_for(model)
    token = adapter.token_id(adapter.inner(model))
    return [run for runs in placeholder_runs(case.batch(processor)["input_ids"], token) for run in runs]


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_one_tensor_per_audio_of_the_compressed_count_in_the_lm_hidden_size(model_type):
    case = CASES[model_type]
    model, processor = case.model(), case.processor()
    native = _native_counts(case, model, processor)
    embeds = audio_embeds(model, processor, waveforms(case.seconds, case.sampling_rate), "uniform:2",
                          model_inputs=case.extra)
    assert [tuple(e.shape) for e in embeds] == [((n + 1) // 2, _hidden(model)) for n in native]
    assert all(e.dtype == torch.float32 for e in embeds)
    assert not li.is_compressed(model)                               # the compressor was applied for the call only


@pytest.mark.parametrize("model_type", ["qwen2_audio", "audioflamingo3", "granite_speech"])
def test_embeddings_are_what_the_model_puts_onto_its_placeholders(model_type):
    case = CASES[model_type]
    model = case.model()
    processor = li.patch_processor(case.processor(), "uniform:2")
    batch = case.batch(processor, "right")
    embeds = audio_embeds(model, case.processor(), waveforms(case.seconds, case.sampling_rate), "uniform:2")
    ids = batch["input_ids"]
    adapter = li.adapter_for(model)
    placeholders = ids == adapter.token_id(adapter.inner(model))
    assert placeholders.sum(-1).tolist() == [len(e) for e in embeds]
    with torch.no_grad():
        inputs_embeds = model.get_input_embeddings()(ids)
        inputs_embeds[placeholders] = torch.cat(embeds)
        with li.compression(model, "uniform:2"):
            expected = model(**batch).logits
        got = model(inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_native_audio_lm_brings_its_processor_and_compressor():
    case = CASES["qwen2_audio"]
    processor = case.processor()
    processor.tokenizer.eos_token = "<|audio_eos|>"
    model = NativeAudioLM(case.model(), processor, "uniform:3", lora={"r": 2})
    waves = waveforms(case.seconds)
    embeds = audio_embeds(model, None, waves)
    assert [len(e) for e in embeds] == model.audio_token_counts(waves).tolist()
    assert embeds[0].shape[1] == _hidden(model.model)


def test_bad_inputs_raise_one_clear_error():
    case = CASES["audioflamingo3"]
    model, processor = case.model(), case.processor()
    waves = waveforms(case.seconds)
    with pytest.raises(ValueError, match="no compression applied: pass compressor"):
        audio_embeds(model, processor, waves)
    with pytest.raises(ValueError, match="unknown compressor kind 'unifrom'"):
        audio_embeds(model, processor, waves, "unifrom:2")
    assert not li.is_compressed(model)
    with li.compression(model, "uniform:2"):
        with pytest.raises(ValueError, match="already has compression applied"):
            audio_embeds(model, processor, waves, "uniform:3")
        assert len(audio_embeds(model, processor, waves)) == len(waves)
    with pytest.raises(ValueError, match="at 8000 Hz, but the processor expects 16000 Hz"):
        audio_embeds(model, processor, waves, "uniform:2", sampling_rate=8000)
    with pytest.raises(ValueError, match="at least one audio"):
        audio_embeds(model, processor, [], "uniform:2")
    with pytest.raises(ValueError, match=r"audios\[1\] must be a non-empty 1-D waveform"):
        audio_embeds(model, processor, [waves[0], waves[1][:0]], "uniform:2")
    with pytest.raises(ValueError, match="2 rows for 1 audios.*keep each audio within one window"):
        audio_embeds(model, processor, waveforms([1.5]), "uniform:2")   # a 1 s window: two encoder rows
    with pytest.raises(ValueError, match="does not support Linear"):
        audio_embeds(torch.nn.Linear(2, 2), processor, waves, "uniform:2")
    with pytest.raises(TypeError, match="needs the model's processor"):
        audio_embeds(model, None, waves, "uniform:2")
