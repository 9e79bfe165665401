"""``lalm-fast reproduce --track whisper`` on a tiny random-weight Whisper and synthetic tone clips."""

import json

import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("soundfile")
pytest.importorskip("matplotlib")

from lalm_fast import reproduce as rep  # noqa: E402
from lalm_fast import whisper_track as wt  # noqa: E402
from lalm_fast.integrations import lora  # noqa: E402
from lalm_fast.integrations import whisper as wh  # noqa: E402

TWO = ["none", "uniform-x3"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("whisper-track")
    return out, wt.run(out, "tiny")


def _count(monkeypatch, name):
    calls = []
    original = getattr(wt, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(wt, name, counting)
    return calls


def test_dry_run_writes_report_and_adapters_for_every_configuration(dry_run):
    out, report = dry_run
    rows = {row["configuration"]: row for row in report["configurations"]}
    assert list(rows) == list(wt.CONFIGURATIONS)
    for name in ("report.md", "report.json", "report.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "report.json").read_text())["better_method"] in wt.METHODS
    assert rows["none"]["audio_tokens_per_second"] > rows["uniform-x2"]["audio_tokens_per_second"] \
        > rows["uniform-x3"]["audio_tokens_per_second"] > rows["uniform-x4"]["audio_tokens_per_second"]
    for name, row in rows.items():
        assert set(row["lora"]) == set(wt.METHODS)
        seeds = 2 if name in wt.TWO_SEED_CONFIGURATIONS else 1
        assert all(len(entry["wer_seeds"]) == seeds for entry in row["lora"].values())
        record = json.loads((out / "adapters" / name / lora.COMPRESSOR_FILE).read_text())
        assert record["compressor"] == wh.build_compressor(wt.CONFIGURATIONS[name]).config()
    assert "| segment-rate3 |" in (out / "report.md").read_text()


def test_rerun_skips_finished_work_and_an_interrupted_training_resumes(tmp_path, monkeypatch):
    wt.run(tmp_path, "tiny", configurations=TWO[:1], seeds=1)
    trainings = _count(monkeypatch, "train_lora")
    wt.run(tmp_path, "tiny", configurations=TWO[:1], seeds=1)
    assert trainings == []                                  # nothing trained again

    steps = []
    original = wt._train_step

    def interrupted(*args):
        if len(steps) == 3:                                  # after the checkpoint at step 2
            raise KeyboardInterrupt
        steps.append(1)
        return original(*args)

    monkeypatch.setattr(wt, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        wt.run(tmp_path, "tiny", configurations=TWO, seeds=1)
    assert (wt.unit_dir(tmp_path, "uniform-x3", wt.METHODS[0], 0) / wt.CHECKPOINT).exists()
    steps.clear()
    monkeypatch.setattr(wt, "_train_step", lambda *args: steps.append(1) or original(*args))
    report = wt.run(tmp_path, "tiny", configurations=TWO, seeds=1)
    preset = wt.PRESETS["tiny"]
    # uniform-x3 resumed at step 2 of its first method, then trained its second method in full.
    assert len(steps) == (preset.steps - preset.save_every) + preset.steps
    assert [row["configuration"] for row in report["configurations"]] == TWO
    assert not (wt.unit_dir(tmp_path, "uniform-x3", wt.METHODS[0], 0) / wt.CHECKPOINT).exists()


def test_self_distillation_targets_are_the_teachers_greedy_output(dry_run):
    out, _ = dry_run
    model, tokenizer, identity = wt.load_model(wt.TINY_RANDOM)
    preset = wt.PRESETS["tiny"]
    train, _, _ = wt.prepare_splits(preset, out / "data", out / "feature_cache", model, identity, 0)
    targets = wt.teacher_targets(model, tokenizer, train, preset)
    assert targets == json.loads((out / "teacher_targets.json").read_text())["targets"]
    from lalm_fast.data import UtteranceLoader, log_mel

    loader = UtteranceLoader(sample_rate=16000, max_seconds=30, skip_bad=True)
    features, _ = log_mel([a for _, a in loader.iter_loaded(train.utterances)])
    with torch.no_grad():                               # the model as shipped, straight from the audio
        tokens = model.generate(features, max_new_tokens=preset.max_new_tokens, do_sample=False,
                                num_beams=1).tolist()
    eot = model.generation_config.eos_token_id
    expected = [wt.prompt_ids(tokenizer) + (t[:t.index(eot)] if eot in t else t) + [eot] for t in tokens]
    assert targets == expected


def test_adapters_load_back_with_the_same_logits(dry_run, tmp_path):
    out, _ = dry_run
    base, tokenizer, identity = wt.load_model(wt.TINY_RANDOM)
    preset = wt.PRESETS["tiny"]
    train, _, _ = wt.prepare_splits(preset, out / "data", out / "feature_cache", base, identity, 0)
    targets = wt.transcript_targets(tokenizer, train)
    trained = wt.train_lora(base, "segment:rate=3", train, targets, len(wt.prompt_ids(tokenizer)), preset, 0,
                            progress=False)
    encoder_outputs, mel_mask = wt.encoder_batch(train.frames[:3])
    ids = torch.tensor([t[:4] for t in targets[:3]])

    def logits(model):
        with torch.no_grad():
            return model(encoder_outputs=encoder_outputs, attention_mask=mel_mask, decoder_input_ids=ids).logits

    expected = logits(trained)
    lora.save_adapter(trained, tmp_path / "adapter", "segment:rate=3")
    loaded, compressor, options = lora.load_adapter(wt.load_model(wt.TINY_RANDOM)[0], tmp_path / "adapter")
    with wh.compression(loaded, compressor, **options):
        torch.testing.assert_close(logits(loaded), expected, rtol=0, atol=1e-6)
    for name in wt.CONFIGURATIONS:                       # and every exported adapter loads
        loaded, compressor, _ = lora.load_adapter(wt.load_model(wt.TINY_RANDOM)[0], out / "adapters" / name)
        assert compressor.config() == wh.build_compressor(wt.CONFIGURATIONS[name]).config()


def test_cli_dispatches_the_whisper_track(tmp_path):
    assert rep.main(["--track", "whisper", "--dry-run", "--out", str(tmp_path), "--configs", "none",
                     "--seeds", "1"]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["track"] == "whisper"
    assert rep.main(["--track", "whisper", "--dry-run", "--lm", "x"]) == 2
    assert rep.main(["--seeds", "2", "--dry-run"]) == 2


def test_lalm_fast_eval_scores_a_committed_style_adapter_as_the_track_did(dry_run, tmp_path, monkeypatch):
    from lalm_fast import cli

    out, report = dry_run
    encoded_by = []
    real_split = wt.cached_split
    monkeypatch.setattr(wt, "cached_split", lambda utts, model, *a: encoded_by.append(wh.is_compressed(model))
                        or real_split(utts, model, *a))
    method = report["better_method"]
    manifest = out / "data" / "asr_test.jsonl"
    assert cli.main(["eval", "--model", str(out / "adapters" / "uniform-x3"), "--manifest", str(manifest),
                     "--base", wt.TINY_RANDOM, "--max-new-tokens", str(wt.PRESETS["tiny"].max_new_tokens),
                     "--limit", str(wt.PRESETS["tiny"].test_utterances),
                     "--out", str(tmp_path)]) == 0
    track = json.loads((out / "runs" / "uniform-x3" / f"{method}-seed0" / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert encoded_by == [False]                        # frames from the plain encoder, compressed once
    assert predictions == track["predictions"]          # same adapter, same clips: same transcripts
    assert all(row["audio_tokens"] > 0 for row in predictions)
    assert json.loads((tmp_path / "eval.json").read_text())["rows"][0]["wer"]["wer"] == pytest.approx(track["wer"])


@pytest.mark.parametrize("option", [["--max-new-tokens", "0"], ["--limit", "0"]])
def test_lalm_fast_eval_rejects_nonpositive_counts(option, capsys):
    from lalm_fast import cli

    assert cli.main(["eval", "--model", "m", "--manifest", "m.jsonl", *option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lalm-fast eval: error:") and "must be >= 1" in err and "\n" not in err
