"""lalm_fast.data on tiny fake datasets written here (sine tones through soundfile)."""

import json
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from lalm_fast.data import (AudioError, DataError, FeatureCache, ManifestError, TranscriptError, Utterance,
                            UtteranceLoader, atomic_write, audio_duration, bucket_batches, load_audio, log_mel,
                            read_covost_tsv, read_librispeech, read_manifest, whisper_encode_fn, write_manifest)


def tone(seconds, sample_rate=16000, freq=440.0, channels=1):
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_tone(path, seconds=1.0, sample_rate=16000, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sample_rate, **kwargs), sample_rate)
    return path


# --- manifests and readers -------------------------------------------------------------------


def test_manifest_round_trip_keeps_fields_and_resolves_relative_paths(tmp_path, monkeypatch):
    inside = write_tone(tmp_path / "data" / "clips" / "a.wav")
    outside = write_tone(tmp_path / "elsewhere" / "b.wav")
    utts = [Utterance(inside, "hello there", translation="hola", lang="en-es", duration=1.0, extra={"speaker": "s1"}),
            Utterance(outside, "second", id="utt-2")]
    manifest = tmp_path / "data" / "train.jsonl"
    write_manifest(manifest, utts)

    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert records[0] == {"id": "a", "audio": "clips/a.wav", "text": "hello there", "translation": "hola",
                          "lang": "en-es", "duration": 1.0, "speaker": "s1"}
    assert records[1]["audio"] == str(outside)  # outside the manifest's folder: kept absolute

    monkeypatch.chdir(tmp_path / "elsewhere")  # relative paths follow the manifest, not the cwd
    assert read_manifest(manifest) == utts


def test_manifest_bad_line_names_file_and_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "a.wav", "text": "ok"}\n\n{"audio": "b.wav"}\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:3: .*\"text\" strings"):
        read_manifest(manifest)
    manifest.write_text("{not json\n")
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: not valid JSON"):
        read_manifest(manifest)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]  # no temporary file left behind


def test_atomic_files_replace_file_by_file_and_move_the_last_one_last(tmp_path, monkeypatch):
    from lalm_fast.data import files

    target = tmp_path / "model"
    target.mkdir()
    (target / "kept.txt").write_text("untouched")
    (target / "config.json").write_text("old")
    moved, real_replace = [], os.replace
    monkeypatch.setattr(files.os, "replace", lambda src, dst: (moved.append(os.path.basename(dst)),
                                                               real_replace(src, dst)))
    with files.atomic_files(target, last="config.json") as staging:
        for name in ("config.json", "b.bin", "a.bin"):
            (staging / name).write_text("new")
    assert moved[-1] == "config.json" and sorted(moved) == ["a.bin", "b.bin", "config.json"]
    assert (target / "kept.txt").read_text() == "untouched" and (target / "config.json").read_text() == "new"
    with pytest.raises(RuntimeError):
        with files.atomic_files(target, last="config.json") as staging:
            (staging / "config.json").write_text("newer")
            raise RuntimeError("crash mid-write")
    assert (target / "config.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no staging folder left behind


def test_move_files_refuses_a_subfolder(tmp_path):
    from lalm_fast.data.files import move_files

    (tmp_path / "src" / "nested").mkdir(parents=True)
    with pytest.raises(ValueError, match="nested"):
        move_files(tmp_path / "src", tmp_path / "dst")


def test_read_librispeech_layout(tmp_path):
    for speaker, chapter, lines in [("19", "198", ["19-198-0001 SECOND ONE", "19-198-0000 FIRST ONE"]),
                                    ("2", "7", ["2-7-0000 ANOTHER SPEAKER"])]:
        folder = tmp_path / speaker / chapter
        folder.mkdir(parents=True)
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            write_tone(folder / f"{line.split()[0]}.flac", seconds=0.5)

    utts = read_librispeech(tmp_path)
    assert [u.id for u in utts] == ["19-198-0000", "19-198-0001", "2-7-0000"]
    assert utts[0].text == "FIRST ONE" and utts[0].lang == "en"
    assert utts[2].audio == tmp_path / "2" / "7" / "2-7-0000.flac"
    assert load_audio(utts[0].audio).shape == (8000,)
    assert audio_duration(utts[0].audio) == 0.5


def test_read_librispeech_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ManifestError, match="trans.txt"):
        read_librispeech(tmp_path)


def test_read_covost_tsv_keeps_quotes_and_language_pair(tmp_path):
    tsv = tmp_path / "covost_v2.en_de.dev.tsv"
    tsv.write_text("path\tsentence\ttranslation\tclient_id\n"
                   'c1.mp3\tHe said "hi.\tEr sagte "hallo.\tspk1\n'
                   "c2.mp3\tSecond\tZweite\tspk2\n")
    utts = read_covost_tsv(tsv, tmp_path / "clips")
    assert [u.text for u in utts] == ['He said "hi.', "Second"]  # a bare quote does not swallow the row
    assert utts[0].translation == 'Er sagte "hallo.'
    assert utts[0].audio == tmp_path / "clips" / "c1.mp3" and utts[0].id == "c1"
    assert utts[0].lang == "en-de" and utts[0].extra == {"speaker": "spk1"}


def test_read_covost_tsv_missing_column(tmp_path):
    tsv = tmp_path / "x.tsv"
    tsv.write_text("path\tsentence\n")
    with pytest.raises(ManifestError, match=r"x\.tsv: missing column\(s\) \['translation'\]"):
        read_covost_tsv(tsv, tmp_path)


# --- audio -----------------------------------------------------------------------------------


def test_resample_22050_to_16000_keeps_length_and_frequency(tmp_path):
    path = write_tone(tmp_path / "a.wav", seconds=1.3, sample_rate=22050, freq=1000.0, channels=2)
    audio = load_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1  # stereo mixed down
    assert len(audio) == math.ceil(round(1.3 * 22050) * 16000 / 22050)
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * 16000 / len(audio)
    assert abs(peak_hz - 1000.0) < 2.0


def test_sample_rate_mismatch_without_resampling_names_file(tmp_path):
    path = write_tone(tmp_path / "rate.wav", sample_rate=8000)
    with pytest.raises(AudioError, match=r"rate\.wav: sample rate 8000 Hz, expected 16000 Hz"):
        load_audio(path, 16000, resample=False)


# --- features --------------------------------------------------------------------------------


def test_log_mel_shapes_and_valid_frames():
    features, frames = log_mel([tone(3.0), tone(1.0), tone(0.01)], window_seconds=10)
    assert features.shape == (3, 80, 1000) and features.dtype == torch.float32
    assert frames.tolist() == [150, 50, 1]  # 50 encoder frames per second, rounded up
    features, frames = log_mel([tone(2.0)], window_seconds=2.5, feature_size=128)
    assert features.shape == (1, 128, 250) and frames.tolist() == [100]


def test_log_mel_refuses_clip_longer_than_window():
    with pytest.raises(ValueError, match=r"audio_batch\[1\] is 3.00 s, longer than the 2 s window"):
        log_mel([tone(1.0), tone(3.0)], window_seconds=2)


def test_whisper_encode_fn_trims_to_valid_frames():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                           num_mel_bins=80, max_source_positions=100)  # a 2 s window
    encode = whisper_encode_fn(WhisperEncoder(config).eval(), window_seconds=2)
    assert [tuple(out.shape) for out in encode([tone(1.0), tone(0.5)])] == [(50, 16), (25, 16)]


# --- batching --------------------------------------------------------------------------------


def test_bucket_batches_deterministic_and_complete():
    lengths = np.random.default_rng(0).integers(1, 500, size=101).tolist()
    batches = bucket_batches(lengths, max_frames=1000, seed=3)
    assert batches == bucket_batches(lengths, max_frames=1000, seed=3)
    assert batches != bucket_batches(lengths, max_frames=1000, seed=4)
    assert sorted(i for batch in batches for i in batch) == list(range(101))
    assert all(len(b) * max(lengths[i] for i in b) <= 1000 for b in batches)


def test_bucket_batches_by_size_groups_similar_lengths():
    batches = bucket_batches([5, 1, 3, 3, 9, 2], batch_size=2)
    assert batches == [[1, 5], [2, 3], [0, 4]]  # no seed: ascending length
    assert bucket_batches([10, 1], max_frames=4) == [[1], [0]]  # too long alone: a batch of one
    with pytest.raises(ValueError, match="batch_size, max_frames"):
        bucket_batches([1, 2])


# --- bad data and the feature cache ---------------------------------------------------------


@pytest.fixture
def mixed_utterances(tmp_path):
    """Two good clips and one of each kind of bad data."""
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    return {
        "good1": Utterance(write_tone(tmp_path / "good1.wav", 1.0), "one"),
        "good2": Utterance(write_tone(tmp_path / "good2.flac", 0.5, sample_rate=22050), "two"),
        "missing": Utterance(tmp_path / "missing.wav", "gone"),
        "corrupt": Utterance(corrupt, "noise"),
        "empty_text": Utterance(write_tone(tmp_path / "silent_text.wav"), "  "),
        "too_long": Utterance(write_tone(tmp_path / "long.wav", 3.0), "long"),
    }


@pytest.mark.parametrize("name, error, message", [
    ("missing", AudioError, r"missing\.wav: audio file not found"),
    ("corrupt", AudioError, r"corrupt\.wav: cannot decode audio"),
    ("empty_text", TranscriptError, r"silent_text\.wav: utterance 'silent_text' has an empty transcript"),
    ("too_long", AudioError, r"long\.wav: clip is 3\.00 s, longer than the 2 s window"),
])
def test_bad_data_raises_naming_the_file(mixed_utterances, name, error, message):
    loader = UtteranceLoader(max_seconds=2)
    with pytest.raises(error, match=message):
        loader.load(mixed_utterances[name])


def test_skip_bad_counts_skips(mixed_utterances):
    loader = UtteranceLoader(max_seconds=2, skip_bad=True)
    loaded = list(loader.iter_loaded(mixed_utterances.values()))
    assert [utt.id for utt, _ in loaded] == ["good1", "good2"]
    assert dict(loader.skips.counts) == {"missing": 1, "corrupt": 1, "empty_text": 1, "too_long": 1}
    assert "skipped 4 utterance(s)" in str(loader.skips) and "long.wav" in str(loader.skips)


class CountingEncoder:
    """A stand-in frozen encoder: 50 frames/s of D=4 features; counts calls and clips."""

    def __init__(self):
        self.calls, self.clips = 0, 0

    def __call__(self, waveforms):
        self.calls += 1
        self.clips += len(waveforms)
        return [torch.full((math.ceil(len(w) / 320), 4), float(len(w))) for w in waveforms]


def test_cache_hit_avoids_reencoding_and_changed_file_invalidates(tmp_path, mixed_utterances):
    utts = [mixed_utterances["good1"], mixed_utterances["good2"]]
    loader = UtteranceLoader(max_seconds=2)
    encoder = CountingEncoder()

    first = FeatureCache(tmp_path / "cache", encoder_id="fake-encoder:v1", window_seconds=2)
    assert first.ensure(utts, encoder, loader, batch_size=8) == utts
    assert (encoder.calls, encoder.clips, first.stats.encoded) == (1, 2, 2)
    frames = first.load(utts[0])
    assert frames.dtype == torch.float16 and frames.shape == (50, 4)

    again = FeatureCache(tmp_path / "cache", encoder_id="fake-encoder:v1", window_seconds=2)  # a new run
    assert again.ensure(utts, encoder, loader) == utts
    assert encoder.calls == 1 and again.stats.hits == 2
    assert torch.equal(again.load(utts[0]), frames)

    write_tone(utts[0].audio, seconds=1.5)  # edited file: new size and mtime
    assert again.ensure(utts, encoder, loader) == utts
    assert (encoder.calls, encoder.clips) == (2, 3)  # only the edited clip re-encoded
    assert again.load(utts[0]).shape == (75, 4)

    other = FeatureCache(tmp_path / "cache", encoder_id="fake-encoder:v2", window_seconds=2)
    assert other.load(utts[1]) is None  # another encoder never reads these entries


def test_cache_unreadable_entry_is_a_miss_and_redone(tmp_path, mixed_utterances):
    utt, encoder = mixed_utterances["good1"], CountingEncoder()
    cache = FeatureCache(tmp_path / "cache", encoder_id="fake", window_seconds=2)
    cache.ensure([utt], encoder, UtteranceLoader(max_seconds=2))
    cache.path_for(utt).write_bytes(b"disk fault")
    assert cache.load(utt) is None
    cache.ensure([utt], encoder, UtteranceLoader(max_seconds=2))
    assert encoder.calls == 2 and cache.load(utt).shape == (50, 4)


def test_cache_with_skip_bad_keeps_only_good_utterances(tmp_path, mixed_utterances):
    loader = UtteranceLoader(max_seconds=2, skip_bad=True)
    cache = FeatureCache(tmp_path / "cache", encoder_id="fake", window_seconds=2)
    kept = cache.ensure(mixed_utterances.values(), CountingEncoder(), loader, batch_size=2)
    assert [utt.id for utt in kept] == ["good1", "good2"]
    assert loader.skips.total == 4


def test_cache_without_skip_bad_raises_naming_the_file(tmp_path, mixed_utterances):
    cache = FeatureCache(tmp_path / "cache", encoder_id="fake", window_seconds=2)
    with pytest.raises(DataError, match=r"missing\.wav"):
        cache.ensure([mixed_utterances["good1"], mixed_utterances["missing"]], CountingEncoder(),
                     UtteranceLoader(max_seconds=2))


def test_cache_refuses_loader_window_longer_than_its_own(tmp_path):
    cache = FeatureCache(tmp_path, encoder_id="fake", window_seconds=10)
    with pytest.raises(ValueError, match="max_seconds"):
        cache.ensure([], CountingEncoder(), UtteranceLoader(max_seconds=30))
