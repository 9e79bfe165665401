"""Compression inside transformers' native Qwen2-Audio: tiny random-init models, CPU, fp32.

The builders at the top (tiny_model, tiny_processor, ...) are shared with test_lora.py and
test_long_audio.py.
"""

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (PreTrainedTokenizerFast, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration,  # noqa: E402
                          Qwen2AudioProcessor, WhisperFeatureExtractor)

from lalm_fast.integrations import qwen2_audio as qa  # noqa: E402
from lalm_fast.nn import AudioCompressor, UniformPool  # noqa: E402

PAD, AUDIO, BOS, EOS = 0, 1, 2, 3
WORDS = ["what", "is", "this", "say", "it", "again", "yes", "no"]
MEL_BINS = 8
SR = 16000


def tiny_model(max_source_positions=50, seed=0):
    """A random Qwen2-Audio whose encoder window is ``2 * max_source_positions`` mel frames."""
    torch.manual_seed(seed)
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", d_model=16, encoder_layers=1, encoder_attention_heads=2,
                          encoder_ffn_dim=32, num_mel_bins=MEL_BINS, max_source_positions=max_source_positions),
        text_config=dict(model_type="qwen2", vocab_size=4 + len(WORDS) + 1, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, pad_token_id=PAD,
                         eos_token_id=EOS, bos_token_id=BOS),
        audio_token_index=AUDIO)
    return Qwen2AudioForConditionalGeneration(config).eval()


def tiny_tokenizer():
    vocab = {t: i for i, t in enumerate(["<pad>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", *WORDS, "<unk>"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>",
                                   additional_special_tokens=["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"])


def tiny_processor(chunk_seconds=1, padding_side="left"):
    """Processor whose window (``chunk_seconds`` * 100 mel frames) matches tiny_model(50 * chunk_seconds)."""
    tokenizer = tiny_tokenizer()
    tokenizer.padding_side = padding_side
    extractor = WhisperFeatureExtractor(feature_size=MEL_BINS, chunk_length=chunk_seconds, sampling_rate=SR)
    return Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tokenizer)


def waveforms(seconds):
    """Noise whose content depends only on its duration, so a sample is the same alone or batched."""
    return [np.random.default_rng(int(s * 1000)).standard_normal(int(s * SR)).astype(np.float32) * 0.1
            for s in seconds]


PROMPT = "<|audio_bos|><|AUDIO|><|audio_eos|> what is this"


def processed(processor, seconds, padding_side="left", prompts=None):
    processor.tokenizer.padding_side = padding_side
    prompts = prompts or [PROMPT] * len(seconds)
    return processor(text=prompts, audio=waveforms(seconds), sampling_rate=SR, return_tensors="pt", padding=True)


def batch_from_counts(mel_lengths, counts, padding_side, window=100, seed=0):
    """input_ids level batch: prefix, a run of counts[b] placeholders, suffix (lengths differ per sample)."""
    generator = torch.Generator().manual_seed(seed)
    rows = [[4 + b % 3, BOS] + [AUDIO] * int(n) + [EOS] + [5, 6, 7][: 1 + b % 3] for b, n in enumerate(counts)]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD)
    for b, row in enumerate(rows):
        if padding_side == "left":
            ids[b, width - len(row):] = torch.tensor(row)
        else:
            ids[b, :len(row)] = torch.tensor(row)
    mel = torch.as_tensor(mel_lengths)
    features = torch.randn(len(rows), MEL_BINS, window, generator=generator)
    feature_mask = (torch.arange(window)[None] < mel[:, None]).long()
    return {"input_ids": ids, "attention_mask": (ids != PAD).long(), "input_features": features,
            "feature_attention_mask": feature_mask}


def select(batch, index):
    """Sample ``index`` of a batch, alone, with its padding removed."""
    keep = batch["attention_mask"][index].bool()
    one = slice(index, index + 1)
    return {"input_ids": batch["input_ids"][one, keep], "attention_mask": batch["attention_mask"][one, keep],
            "input_features": batch["input_features"][one], "feature_attention_mask": batch["feature_attention_mask"][one]}


def valid_logits(logits, attention_mask, index):
    return logits[index][attention_mask[index].bool()]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


MEL_LENGTHS = [100, 37, 64]   # full window, odd short, even medium


def test_none_compressor_logits_equal_unpatched_exactly(model):
    counts = qa.audio_token_counts(MEL_LENGTHS, "none", window=100)
    batch = batch_from_counts(MEL_LENGTHS, counts, "left")
    with torch.no_grad():
        reference = model(**batch).logits
        with qa.compression(model, "none"):
            patched = model(**batch).logits
    assert torch.equal(reference, patched)


def test_revert_restores_the_model_exactly(model):
    pooler, keys = model.model.audio_tower.avg_pooler, list(model.state_dict())
    qa.apply_compression(model, "uniform:3", replace_avg_pool=True)
    assert isinstance(model.model.audio_tower.avg_pooler, qa.LengthAwareAvgPool)
    assert list(model.state_dict()) == keys          # the patch adds no parameters or buffers
    qa.revert(model)
    assert model.model.audio_tower.avg_pooler is pooler
    assert "forward" not in model.model.__dict__ and not qa.is_compressed(model)
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("spec", ["uniform:2", "uniform:3", "segment:rate=3"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("replace_avg_pool", [False, True])
def test_sample_logits_same_alone_and_batched(model, spec, padding_side, replace_avg_pool):
    counts = qa.audio_token_counts(MEL_LENGTHS, spec, replace_avg_pool=replace_avg_pool, window=100)
    batch = batch_from_counts(MEL_LENGTHS, counts, padding_side)
    with torch.no_grad(), qa.compression(model, spec, replace_avg_pool=replace_avg_pool):
        audio = qa.get_audio_features(model, batch["input_features"], batch["feature_attention_mask"])
        assert audio.lengths.tolist() == counts.tolist()
        assert ((batch["input_ids"] == AUDIO).sum(-1)).tolist() == counts.tolist()
        batched = model(**batch).logits
        for index in range(len(MEL_LENGTHS)):
            alone = model(**select(batch, index)).logits[0]
            torch.testing.assert_close(valid_logits(batched, batch["attention_mask"], index), alone,
                                       rtol=1e-5, atol=1e-5)


def test_counts_follow_the_formula():
    mel = torch.tensor([3000, 2999, 300, 1, 0])
    native = ((mel - 1) // 2 + 1 - 2) // 2 + 1             # the processor's own formula
    assert qa.audio_token_counts(mel, "none").tolist() == native.tolist()
    assert qa.audio_token_counts(mel, "uniform:3").tolist() == ((native + 2) // 3).tolist()
    frames = (mel - 1) // 2 + 1
    assert qa.audio_token_counts(mel, "none", replace_avg_pool=True).tolist() == ((frames + 1) // 2).tolist()


def test_processor_counts_match_the_model_and_batches_any_padding_side(model):
    processor = tiny_processor()
    qa.patch_processor(processor, "uniform:3")
    seconds = [1.0, 0.37, 0.64]
    with torch.no_grad(), qa.compression(model, "uniform:3"):
        for side in ("left", "right"):
            batch = processed(processor, seconds, side)
            audio = qa.get_audio_features(model, batch["input_features"], batch["feature_attention_mask"])
            assert (batch["input_ids"] == AUDIO).sum(-1).tolist() == audio.lengths.tolist() == [9, 3, 6]
            logits = model(**batch).logits
            alone = model(**processed(processor, seconds[1:2], side)).logits[0]
            torch.testing.assert_close(valid_logits(logits, batch["attention_mask"], 1), alone, rtol=1e-5, atol=1e-5)
    qa.revert_processor(processor)
    assert "_process_audio" not in processor.__dict__


def test_generate_batched_matches_alone(model):
    processor = tiny_processor()
    qa.patch_processor(processor, "uniform:2")
    seconds = [1.0, 0.37]
    with torch.no_grad(), qa.compression(model, "uniform:2"):
        batch = processed(processor, seconds, "left")
        generated = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=PAD)
        alone = model.generate(**processed(processor, seconds[1:], "left"), max_new_tokens=4, do_sample=False,
                               pad_token_id=PAD)
    assert generated.shape == (2, batch["input_ids"].shape[1] + 4)
    assert generated[1, -4:].tolist() == alone[0, -4:].tolist()


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_content_adaptive_inputs_embeds_path(model, padding_side):
    processor = tiny_processor()
    spec = "segment:prominence=0.05,min_len=2"
    qa.patch_processor(processor, spec)               # one placeholder per audio
    seconds = [1.0, 0.37, 0.64]
    with torch.no_grad(), qa.compression(model, spec):
        batch = processed(processor, seconds, padding_side)
        assert (batch["input_ids"] == AUDIO).sum(-1).tolist() == [1, 1, 1]
        with pytest.raises(ValueError, match="content-adaptive.*build_inputs_embeds"):
            model(**batch)
        embeds = qa.build_inputs_embeds(model, **batch)
        audio = qa.get_audio_features(model, batch["input_features"], batch["feature_attention_mask"])
        assert embeds["attention_mask"].sum(-1).tolist() == (audio.lengths + batch["attention_mask"].sum(-1) - 1).tolist()
        logits = model(inputs_embeds=embeds["inputs_embeds"], attention_mask=embeds["attention_mask"]).logits
        alone = qa.build_inputs_embeds(model, **processed(processor, seconds[2:], padding_side))
        alone_logits = model(**alone).logits[0]
        torch.testing.assert_close(valid_logits(logits, embeds["attention_mask"], 2), alone_logits, rtol=1e-5, atol=1e-5)
        generated = model.generate(**qa.build_inputs_embeds(model, **processed(processor, seconds, "left")),
                                   max_new_tokens=3, do_sample=False, pad_token_id=PAD)
    assert generated.shape == (3, 3)                 # inputs_embeds: generate returns the new tokens only


def test_labels_stay_aligned_and_train(model):
    counts = qa.audio_token_counts(MEL_LENGTHS, "uniform:3", window=100)
    batch = batch_from_counts(MEL_LENGTHS, [1, 1, 1], "right")  # one placeholder per audio
    labels = torch.where(batch["attention_mask"].bool() & (batch["input_ids"] != AUDIO), batch["input_ids"], -100)
    with qa.compression(model, "uniform:3"):
        out = qa.build_inputs_embeds(model, **batch, labels=labels)
        for b in range(len(MEL_LENGTHS)):
            text = batch["input_ids"][b][labels[b] != -100].tolist()
            assert out["labels"][b][out["labels"][b] != -100].tolist() == text
            audio_positions = out["attention_mask"][b].bool() & (out["labels"][b] == -100)
            assert int(audio_positions.sum()) == int(counts[b])
        model.train()
        try:
            loss = model(**out).loss
            loss.backward()
        finally:
            model.eval()
            model.zero_grad()
    assert torch.isfinite(loss)


class ChangesFeatureSize(AudioCompressor):
    kind = "widen"

    def forward(self, x, lengths=None, attention_mask=None):
        out = UniformPool(2)(x, lengths)
        out.values = torch.cat([out.values, out.values], -1)
        return out


def test_clear_errors_for_mismatches(model):
    counts = qa.audio_token_counts(MEL_LENGTHS, "none", window=100)   # what an unpatched processor writes
    batch = batch_from_counts(MEL_LENGTHS, counts, "left")
    with torch.no_grad():
        with qa.compression(model, "uniform:3"):
            with pytest.raises(ValueError, match=r"audio 0 \(in sample 0\) has 25 .* produced 9 tokens.*patch_processor"):
                model(**batch)
            with pytest.raises(ValueError, match="already has compression"):
                qa.apply_compression(model, "uniform:2")
        with qa.compression(model, ChangesFeatureSize()):
            with pytest.raises(ValueError, match="changed the feature size from 16 to 32"):
                model(**batch)
    with pytest.raises(ValueError, match="content-adaptive"):
        qa.audio_token_counts(MEL_LENGTHS, "segment:threshold=0.1")
    with pytest.raises(ValueError, match="no compression applied"):
        qa.revert(model)
    with pytest.raises(ValueError, match="2 runs of <\\|AUDIO\\|> placeholders but 3 audio counts"):
        qa.expand_audio_placeholders(batch["input_ids"][:2], [1, 2, 3], AUDIO, PAD)


def _pooled_by(pool, x, lengths):
    """What ``pool`` returns for ``x`` inside ``using(lengths)``: each sample's mean of its valid frames."""
    with pool.using(torch.tensor(lengths)):
        return pool(x)


def test_length_aware_pool_lengths_nest_and_restore():
    pool, x = qa.LengthAwareAvgPool(2), torch.arange(12.0).reshape(1, 2, 6)
    assert pool.frame_lengths is None
    with pool.using(torch.tensor([5])):
        outer = pool(x)
        assert torch.equal(_pooled_by(pool, x, [3]), _pooled_by(qa.LengthAwareAvgPool(2), x, [3]))
        assert pool.frame_lengths.tolist() == [5]           # the inner using() restored the outer lengths
        assert torch.equal(pool(x), outer)
    assert pool.frame_lengths is None
    assert torch.equal(pool(x), torch.nn.functional.avg_pool1d(x, 2))  # no lengths: every frame counts


def test_length_aware_pool_lengths_are_per_thread():
    import threading

    pool, x = qa.LengthAwareAvgPool(2), torch.randn(1, 4, 9)
    expected = {n: _pooled_by(qa.LengthAwareAvgPool(2), x, [n]) for n in (3, 8)}
    both_inside, results = threading.Barrier(2), {}

    def run(n):
        with pool.using(torch.tensor([n])):
            both_inside.wait(timeout=10)  # each thread pools while the other one's lengths are set
            results[n] = pool(x)
            both_inside.wait(timeout=10)

    threads = [threading.Thread(target=run, args=(n,)) for n in expected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(results) == set(expected)
    assert all(torch.equal(results[n], expected[n]) for n in expected)
    assert not torch.equal(expected[3], expected[8])
