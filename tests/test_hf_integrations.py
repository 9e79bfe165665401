"""The generic native-LALM integration (lalm_fast.integrations) on tiny random models of every
supported model type, CPU, fp32.

Per model type: ``none`` and ``revert`` give the unpatched logits exactly; for fixed-rate
compressors the model accepts ``output_lengths(native)`` placeholders per audio (what the
patched processor writes) and rejects the native count with a clear message; a batch gives
each sample the logits it gets alone (both padding sides); ``generate`` runs; content-adaptive
compressors go through ``expand_inputs``.
"""

import pytest
import torch

pytest.importorskip("transformers")
from tests.hf_tiny import CASES  # noqa: E402

import lalm_fast.integrations as li  # noqa: E402
from lalm_fast.integrations._placeholders import placeholder_runs  # noqa: E402
from lalm_fast.nn import build_compressor  # noqa: E402

FIXED = ["uniform:2", "downsample:3", "segment:rate=2"]
ADAPTIVE = "segment:prominence=0.05,min_len=2"
TYPES = sorted(CASES)


@pytest.fixture(scope="module", params=TYPES)
def case(request):
    case = CASES[request.param]
    return case, case.model()


def _runs(case_model, batch):
    case, model = case_model
    adapter = li.adapter_for(model)
    token = adapter.token_id(adapter.inner(model)) if hasattr(adapter, "token_id") else model.config.audio_token_id
    return [run for sample in placeholder_runs(batch["input_ids"], token) for run in sample]


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _select(batch: dict, index: int) -> dict:
    """Sample ``index`` alone: its row of every tensor, text padding removed, audio inputs as batched."""
    keep = batch["attention_mask"][index].bool()
    out = {}
    for name, value in batch.items():
        row = value[index:index + 1] if torch.is_tensor(value) and value.dim() else value
        out[name] = row[:, keep] if torch.is_tensor(row) and row.shape == batch["input_ids"][:1].shape else row
    return out


def test_unsupported_model_and_bad_spec_raise_clear_errors():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="does not support .*supported model types: .*glmasr"):
        li.apply_compression(model, "uniform:2")
    assert "qwen2_audio" in li.supported_models()


def test_bad_spec_and_double_apply_raise_clear_errors():
    case = CASES["glmasr"]
    model = case.model()
    with pytest.raises(ValueError, match="unknown compressor kind 'unifrom'"):
        li.apply_compression(model, "unifrom:2")
    with pytest.raises(ValueError, match="cannot read 'k=two'"):
        li.apply_compression(model, "uniform:k=two")
    assert not li.is_compressed(model)
    with li.compression(model, "uniform:2"):
        with pytest.raises(ValueError, match="already has compression"):
            li.apply_compression(model, "uniform:3")
    with pytest.raises(ValueError, match="no compression applied"):
        li.revert(model)


def test_audio_over_one_window_is_a_clear_error():
    case = CASES["glmasr"]                      # 2 s encoder window: 3 s of audio gives two encoder rows
    model, processor = case.model(), case.processor()
    li.patch_processor(processor, "uniform:2")
    batch = case.batch(processor, seconds=[3.0, 1.0])
    with li.compression(model, "uniform:2"):
        with pytest.raises(ValueError, match="2 runs of audio placeholders but the audio encoder returned 3 audios.*"
                                             "one row per window"):
            _logits(model, batch)


def test_dots3_note_audio_over_one_chunk_is_a_clear_error():
    case = CASES["dots3_note"]                  # 2 s chunks: 3 s of audio gives two encoder rows
    model, processor = case.model(), li.patch_processor(case.processor(), "uniform:2")
    with li.compression(model, "uniform:2"):
        with pytest.raises(ValueError, match="2 runs of audio placeholders but the audio encoder returned 3 audios"):
            _logits(model, case.batch(processor, seconds=[3.0, 1.0]))


def test_vibevoice_asr_adaptive_needs_sample_false():
    case = CASES["vibevoice_asr"]
    model, processor = case.model(), li.patch_processor(case.processor(), ADAPTIVE)
    batch = case.batch(processor)
    del batch["sample"]                         # forward's default: sample=True, noise on every call
    with li.compression(model, ADAPTIVE):
        with pytest.raises(ValueError, match="sample=False"):
            li.expand_inputs(model, batch)


def test_none_and_revert_give_the_unpatched_logits_exactly(case):
    case_def, model = case
    processor = case_def.processor()
    batch = case_def.batch(processor)
    reference = _logits(model, batch)
    keys = list(model.state_dict())
    with li.compression(model, "none"):
        li.patch_processor(processor, "none")
        assert torch.equal(_logits(model, case_def.batch(processor)), reference)
        li.revert_processor(processor)
    assert not li.is_compressed(model) and list(model.state_dict()) == keys
    assert torch.equal(_logits(model, batch), reference)


@pytest.mark.parametrize("spec", FIXED)
def test_compressed_counts_accepted_native_rejected(case, spec):
    case_def, model = case
    processor = case_def.processor()
    native_batch = case_def.batch(processor)
    native = _runs(case, native_batch)
    li.patch_processor(processor, spec)
    batch = case_def.batch(processor)
    expected = build_compressor(spec).output_lengths(torch.tensor(native)).tolist()
    with li.compression(model, spec):
        assert _runs(case, batch) == expected
        assert li.adapter_for(model).audio_lengths(model, batch).tolist() == expected
        assert _logits(model, batch).shape[:2] == batch["input_ids"].shape
        with pytest.raises(ValueError, match=rf"audio 0 \(in sample 0\) has {native[0]} \S+ placeholders but "
                                             rf"compressor .* produced {expected[0]} tokens.*patch_processor"):
            _logits(model, native_batch)


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("spec", FIXED)
def test_batched_logits_equal_each_sample_alone(case, spec, padding_side):
    case_def, model = case
    processor = li.patch_processor(case_def.processor(), spec)
    batch = case_def.batch(processor, padding_side)
    with li.compression(model, spec):
        batched = _logits(model, batch)
        for index in range(len(case_def.seconds)):
            alone = _logits(model, _select(batch, index))[0]
            valid = batched[index][batch["attention_mask"][index].bool()]
            torch.testing.assert_close(valid, alone, rtol=1e-4, atol=1e-5)


def test_generate_runs_compressed(case):
    case_def, model = case
    processor = li.patch_processor(case_def.processor(), "uniform:2")
    batch = case_def.batch(processor, "left")
    with li.compression(model, "uniform:2"), torch.no_grad():
        out = model.generate(**batch, max_new_tokens=3, do_sample=False, min_new_tokens=3)
    assert out.shape == (len(case_def.seconds), batch["input_ids"].shape[1] + 3)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_content_adaptive_expand_inputs(case, padding_side):
    case_def, model = case
    processor = li.patch_processor(case_def.processor(), ADAPTIVE)
    batch = case_def.batch(processor, padding_side)
    assert _runs(case, batch) == [1] * len(case_def.seconds)
    with li.compression(model, ADAPTIVE):
        with pytest.raises(ValueError, match="content-adaptive.*expand_inputs"):
            _logits(model, batch)
        expanded = li.expand_inputs(model, batch, padding_side=padding_side)
        counts = li.adapter_for(model).audio_lengths(model, batch).tolist()
        assert _runs(case, expanded) == counts
        pad_column = 0 if padding_side == "left" else -1
        assert not expanded["attention_mask"][:, pad_column].all() or len(set(counts)) == 1   # re-padded there
        batched = _logits(model, expanded)
        for index in range(len(case_def.seconds)):
            alone = _logits(model, _select(expanded, index))[0]
            valid = batched[index][expanded["attention_mask"][index].bool()]
            torch.testing.assert_close(valid, alone, rtol=1e-4, atol=1e-5)
        with torch.no_grad():
            out = model.generate(**li.expand_inputs(model, case_def.batch(processor, "left")), max_new_tokens=2,
                                 do_sample=False, min_new_tokens=2)
        assert out.shape[0] == len(case_def.seconds)
