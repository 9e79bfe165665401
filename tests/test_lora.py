"""peft LoRA scoped to the language model, and adapters saved with their compressor config."""

import json
import os

import pytest
import torch

peft = pytest.importorskip("peft")
from peft import LoraConfig, get_peft_model  # noqa: E402

from lalm_fast.integrations import lora  # noqa: E402
from lalm_fast.integrations import qwen2_audio as qa  # noqa: E402
from tests.test_qwen2_audio import MEL_LENGTHS, batch_from_counts, tiny_model  # noqa: E402


def test_plain_target_names_would_reach_the_audio_tower():
    # Why the preset exists: the Whisper-style tower has q_proj/v_proj too.
    names = lora.lora_module_names(get_peft_model(tiny_model(), LoraConfig(target_modules=["q_proj", "v_proj"])))
    assert any("audio_tower" in name for name in names)


def test_preset_puts_lora_in_the_language_model_only():
    model = get_peft_model(tiny_model(), lora.language_model_lora_config(target_modules=lora.LLM_ALL_LINEAR))
    names = lora.lora_module_names(model)
    assert len(names) == 2 * len(lora.LLM_ALL_LINEAR)           # 2 decoder layers
    assert all(".language_model." in name for name in names)
    assert not any("audio_tower" in name or "multi_modal_projector" in name for name in names)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name and ".language_model." in name for name in trainable)


def _randomize_lora(model):
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)   # lora_B starts at zero: make the adapter matter


def test_save_load_round_trips_adapter_and_compressor(tmp_path):
    spec, options = "segment:rate=3", {"replace_avg_pool": True}
    counts = qa.audio_token_counts(MEL_LENGTHS, spec, window=100, **options)
    batch = batch_from_counts(MEL_LENGTHS, counts, "left")

    trained = get_peft_model(tiny_model(), lora.language_model_lora_config())
    _randomize_lora(trained)
    qa.apply_compression(trained, spec, **options)
    trained.train()
    trained(**batch, labels=batch["input_ids"]).loss.backward()   # compression + LoRA train end to end
    assert all(p.grad is not None for n, p in trained.named_parameters() if p.requires_grad)
    trained.eval()
    with torch.no_grad():
        expected = trained(**batch).logits

    target = tmp_path / "adapter"
    lora.save_adapter(trained, target, qa._patch_of(qa.inner_model(trained)).compressor, **options)
    lora.save_adapter(trained, target, spec, **options)            # overwriting an existing save works
    assert json.loads((target / lora.COMPRESSOR_FILE).read_text()) == {
        "compressor": {"kind": "segment", "rate": 3}, "options": options}
    assert sorted(os.listdir(tmp_path)) == ["adapter"]              # no staging folder left behind

    loaded, compressor, loaded_options = lora.load_adapter(tiny_model(), target)
    assert compressor.config() == {"kind": "segment", "rate": 3} and loaded_options == options
    qa.apply_compression(loaded, compressor, **loaded_options)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=0)
    assert not any("audio_tower" in name for name in lora.lora_module_names(loaded))


def test_load_rejects_a_folder_without_compressor_config(tmp_path):
    with pytest.raises(ValueError, match="lalm_fast_compressor.json"):
        lora.load_adapter(tiny_model(), tmp_path)
