"""lalm_fast.training and the train / eval CLI on tiny random models and synthetic tones (no downloads)."""

import json
import os
import signal

import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("peft")
pytest.importorskip("soundfile")

from safetensors.torch import load_file  # noqa: E402

from lalm_fast import cli, training  # noqa: E402
from lalm_fast.data import DataError, read_manifest, write_manifest  # noqa: E402
from lalm_fast.evaluate import evaluate_model, wer  # noqa: E402
from lalm_fast.training import (Dataset, TrainConfig, build_model, latest_checkpoint, make_synthetic,  # noqa: E402
                                train)
from lalm_fast.training import loop  # noqa: E402

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.json")


def tiny_config(output_dir, **optim):
    config = TrainConfig.from_file(TINY, output_dir=str(output_dir))
    config.data.eval = None
    config.run.eval_every = 0
    for name, value in optim.items():
        setattr(config.optim, name, value)
    return config


def weights(run_dir):
    return load_file(latest_checkpoint(run_dir) / "trainable.safetensors")


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tmp_path):
    config = tiny_config(tmp_path, total_steps=5, grad_accum=1, warmup_steps=0)
    config.data.train, config.data.batch_size = "synthetic:4", 4  # one batch per epoch: the same batch each step
    result = train(config)
    assert result.step == 5 and len(result.losses) == 5
    assert result.losses[-1] < result.losses[0] - 0.05


@pytest.mark.parametrize("cache", [True, False])
def test_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch, cache):
    def config(name):
        c = tiny_config(tmp_path / name, total_steps=6, grad_accum=2)  # 8 clips / 4 per batch: steps cross epochs
        c.data.train, c.model.lora["dropout"] = "synthetic:8", 0.2  # dropout: the RNG state must resume too
        c.data.cache = cache
        return c

    straight = train(config("straight"))

    original = loop._Loop._periodic

    def interrupt_after_step_3(self, position):
        original(self, position)
        if position.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop._Loop, "_periodic", interrupt_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(config("resumed"))
    assert latest_checkpoint(tmp_path / "resumed").name == "step-00000003"  # the interruption lost nothing
    monkeypatch.setattr(loop._Loop, "_periodic", original)
    resumed = train(config("resumed"), resume=True)

    assert resumed.step == 6 and resumed.losses == straight.losses[3:]
    expected, got = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert expected.keys() == got.keys() and any("lora" in name for name in got)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert (tmp_path / "resumed" / training.FEATURE_CACHE).is_dir() == cache


def test_a_time_budget_stops_at_a_checkpoint_and_the_next_call_continues_the_same_run(tmp_path):
    def config(name):
        c = tiny_config(tmp_path / name, total_steps=5, grad_accum=1)
        c.data.train, c.run.save_every = "synthetic:8", 0  # no periodic checkpoint: the stop must write one
        return c

    straight = train(config("straight"))
    first = train(config("pieces"), stop_after_seconds=0.0)  # stops after its first step
    assert first.step == 1 and first.final_dir is None
    assert latest_checkpoint(tmp_path / "pieces").name == "step-00000001"
    partial, _ = training.load_trained(tmp_path / "pieces" / loop.LATEST)
    assert torch.equal(partial.projector.state_dict()["0.weight"],
                       weights(tmp_path / "pieces")["projector.0.weight"])
    rest = train(config("pieces"), resume=True)
    assert rest.step == 5 and rest.final_dir is not None
    assert first.losses + rest.losses == straight.losses
    for name, value in weights(tmp_path / "straight").items():
        assert torch.equal(value, weights(tmp_path / "pieces")[name]), name
    log = [json.loads(line) for line in (tmp_path / "pieces" / loop.TRAIN_LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in log] == [round(x, 5) for x in straight.losses]


def test_sigterm_stops_at_the_end_of_the_step_saved_and_a_resume_equals_one_run(tmp_path, monkeypatch):
    def config(name):
        c = tiny_config(tmp_path / name, total_steps=4, grad_accum=1)
        c.data.train, c.run.save_every = "synthetic:8", 0  # no periodic checkpoint: the stop must write one
        return c

    straight = train(config("straight"))
    handler, original, calls = signal.getsignal(signal.SIGTERM), loop._Loop._step, []

    def step_then_terminate(self, position):
        calls.append(position.step)
        loss = original(self, position)
        if len(calls) == 2:  # arrives during step 2: step 2 completes, step 3 never starts
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(loop._Loop, "_step", step_then_terminate)
    with pytest.raises(SystemExit) as stopped:
        train(config("pieces"))
    monkeypatch.undo()
    assert stopped.value.code == 128 + signal.SIGTERM and calls == [0, 1]
    assert latest_checkpoint(tmp_path / "pieces").name == "step-00000002"
    assert (tmp_path / "pieces" / loop.LATEST / "lalm_train.json").exists()
    assert signal.getsignal(signal.SIGTERM) == handler  # the handler does not outlive the run
    rest = train(config("pieces"), resume=True)
    assert rest.step == 4 and rest.losses == straight.losses[2:]
    for name, value in weights(tmp_path / "straight").items():
        assert torch.equal(value, weights(tmp_path / "pieces")[name]), name


@pytest.mark.parametrize("train_lora", [True, False])
def test_init_from_starts_from_a_trained_model_with_a_new_compressor(tmp_path, train_lora):
    base = tiny_config(tmp_path / "base", total_steps=2)
    base.data.train = "synthetic:8"
    base_dir = train(base).final_dir
    adapted = tiny_config(tmp_path / "adapted", total_steps=2)
    adapted.data.train, adapted.model.lora, adapted.align.ctc_steps = "synthetic:8", None, 0
    adapted.model.init_from, adapted.model.train_lora, adapted.model.compressor = str(base_dir), train_lora, "uniform:3"
    adapted.check()
    start = build_model(adapted.model)
    assert start.config.compressor == {"kind": "uniform", "k": 3}
    saved = load_file(base_dir / "projector.safetensors")
    assert all(torch.equal(start.projector.state_dict()[name], value) for name, value in saved.items())
    lora_before = {n: p.detach().clone() for n, p in start.named_parameters() if "lora_" in n}
    assert lora_before and all(p.requires_grad == train_lora for n, p in start.named_parameters() if "lora_" in n)
    final = train(adapted).final_dir
    model, spec = training.load_trained(final)
    assert spec.compressor == "uniform:3" and model.config.compressor == {"kind": "uniform", "k": 3}
    lora_after = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert all(torch.equal(lora_before[n], lora_after[n]) for n in lora_before) == (not train_lora)
    assert not torch.equal(model.projector.state_dict()["0.weight"], saved["0.weight"])


def test_init_from_rules(tmp_path):
    config = tiny_config(tmp_path)
    config.model.train_lora = False
    with pytest.raises(ValueError, match="train_lora.*needs model.init_from"):
        config.check()
    config.model.train_lora, config.model.init_from = True, str(tmp_path)
    with pytest.raises(ValueError, match="init_from.*AudioLM.save_pretrained"):
        config.check()


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, total_steps=6, grad_accum=1)
    config.run.save_every, config.run.keep_last = 2, 1
    real_save, calls = torch.save, []

    def crash_on_second_checkpoint(*args, **kwargs):
        calls.append(1)
        if len(calls) >= 2:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", crash_on_second_checkpoint)
    with pytest.raises(OSError, match="disk full"):
        train(config)
    checkpoints = tmp_path / "checkpoints"
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    assert sorted(os.listdir(checkpoints)) == ["step-00000002"]  # no half-written folder left behind

    monkeypatch.setattr(torch, "save", real_save)
    assert train(config, resume=True).step == 6


def _manifest_with_bad_clips(tmp_path):
    utterances = make_synthetic(tmp_path / "clips", 6)
    os.remove(utterances[1].audio)                        # missing: found before training starts
    (tmp_path / "clips" / "utt0002.flac").write_bytes(b"not audio at all")  # corrupt: found at load time
    utterances[1].duration = None                         # no duration: the header is checked up front
    write_manifest(tmp_path / "bad.jsonl", utterances)
    return tmp_path / "bad.jsonl", utterances


@pytest.mark.parametrize("cache", [True, False])
def test_bad_audio_raises_naming_the_file_or_is_counted_with_skip_bad(tmp_path, cache):
    manifest, utterances = _manifest_with_bad_clips(tmp_path)
    config = tiny_config(tmp_path / "run", total_steps=2, grad_accum=1)
    config.data.train, config.data.cache = str(manifest), cache
    with pytest.raises(DataError, match="utt0001.flac"):
        train(config)

    config.data.skip_bad = True
    result = train(config)
    assert result.step == 2
    assert result.skips.total == 2 and dict(result.skips.counts) == {"missing": 1, "corrupt": 1}


def test_evaluation_metrics_match_hand_computed_values(tmp_path):
    config = tiny_config(tmp_path)
    config.data.batch_size = 4
    model = build_model(config.model).eval()
    dataset = Dataset(make_synthetic(tmp_path / "clips", 4), config.model, config.data)
    result = evaluate_model(model, dataset, config.data, generate=4)

    features, frames, targets, seconds = dataset.load([0, 1, 2, 3])
    with torch.no_grad():
        out = model(features, frames, tasks="transcribe", targets=targets)
        hypotheses = model.generate(features, frames, max_new_tokens=config.data.max_new_tokens)
    assert result["loss"] == pytest.approx(out.loss.item(), rel=1e-5)
    assert result["wer"].wer == pytest.approx(wer(targets, hypotheses).wer)
    assert result["audio_tokens_per_second"] == pytest.approx(out.inputs.audio_lengths.sum().item() / seconds)


def test_cli_train_then_eval(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--config", TINY, "--output-dir", str(run_dir)]) == 0
    assert "trained to step 6" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in open(run_dir / "metrics.jsonl")] == [3, 6]

    manifest = run_dir / "synthetic" / "manifest.jsonl"
    assert len(read_manifest(manifest)) == 16
    out = tmp_path / "eval"
    assert cli.main(["eval", "--model", str(run_dir / "final"), "--manifest", str(manifest), "--out", str(out),
                     "--limit", "4"]) == 0
    report = json.loads((out / "eval.json").read_text())
    row = report["rows"][0]
    assert row["wer"] is not None and row["extra"]["skipped"] == 0
    assert "WER %" in (out / "eval.md").read_text()
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and {"id", "reference", "hypothesis", "audio_tokens"} <= set(predictions[0])
    assert all(row["audio_tokens"] > 0 for row in predictions)
    # The reloaded model scores the training data exactly as the run's last evaluation did.
    last = json.loads(open(run_dir / "metrics.jsonl").read().splitlines()[-1])
    assert row["extra"]["loss"] == pytest.approx(last["loss"], abs=1e-4)


# ----- feature cache ----------------------------------------------------------------------------


def count_encoder_calls(monkeypatch):
    calls, real = [], training.build_model

    def counting(spec):
        model = real(spec)
        model.encoder.register_forward_pre_hook(lambda *args: calls.append(1))
        return model

    monkeypatch.setattr(loop, "build_model", counting)
    return calls


def test_a_second_run_with_the_same_cache_never_runs_the_encoder(tmp_path, monkeypatch):
    utterances = make_synthetic(tmp_path / "clips", 8)
    write_manifest(tmp_path / "clips.jsonl", utterances)

    def config(name):
        c = tiny_config(tmp_path / name, total_steps=4, grad_accum=1)
        c.data.train = c.data.eval = str(tmp_path / "clips.jsonl")  # evaluation and decoding read the cache too
        c.data.cache_dir = str(tmp_path / "cache")
        return c

    calls = count_encoder_calls(monkeypatch)
    first = train(config("first"))
    assert calls and len(list((tmp_path / "cache").rglob("*.safetensors"))) == 8
    calls.clear()
    second = train(config("second"))
    assert calls == []
    assert second.losses == first.losses and second.evals[-1]["loss"] == first.evals[-1]["loss"]

    other = config("other-window")
    other.model.window_seconds = 2.0  # another encoder (window): a miss, encoded again
    train(other)
    assert calls and len(list((tmp_path / "cache").rglob("*.safetensors"))) == 16


def test_cached_training_matches_the_encoder_path_up_to_fp16(tmp_path):
    """The cache stores float16: the first steps' losses differ from encoding every step only by that."""
    def run(name, cache):
        c = tiny_config(tmp_path / name, total_steps=2, grad_accum=1)
        c.data.train, c.data.cache = "synthetic:4", cache
        return train(c).losses

    assert run("cached", True) == pytest.approx(run("encoded", False), abs=1e-3)


def test_cache_identity_names_the_encoder_and_window(tmp_path):
    config = tiny_config(tmp_path)
    base = training.encoder_identity(config.model)
    assert "tiny-random" in base and "window=1s" in base
    config.model.window_seconds = 2.0
    assert training.encoder_identity(config.model) != base
    config.model.window_seconds, config.model.seed = 1.0, 1  # other tiny-random weights
    assert training.encoder_identity(config.model) != base
    config.model.seed, config.model.encoder = 0, "packaged:tiny.en"
    assert training.encoder_identity(config.model).startswith("packaged:tiny.en|window=1s")


def test_cache_defaults_to_the_frozen_encoder_and_rejects_a_trained_one(tmp_path):
    config = tiny_config(tmp_path)
    assert training.uses_cache(config.model, config.data)
    config.model.freeze_encoder = False
    assert not training.uses_cache(config.model, config.data)
    config.data.cache = True
    with pytest.raises(ValueError, match="freeze_encoder"):
        training.uses_cache(config.model, config.data)


def test_the_old_train_module_is_a_deprecated_alias():
    import importlib
    import sys

    sys.modules.pop("lalm_fast.train", None)
    with pytest.warns(DeprecationWarning, match="lalm_fast.training"):
        old = importlib.import_module("lalm_fast.train")
    assert old.train is training.train and old.TrainConfig is TrainConfig
    assert old.evaluate_model is evaluate_model and old.ctc_warmup is training.ctc_warmup


def test_lalm_fast_models_never_imports_the_integrations():
    import subprocess
    import sys

    code = ("import sys, lalm_fast.models, lalm_fast.training, lalm_fast.evaluate.model; "
            "assert not [m for m in sys.modules if m.startswith('lalm_fast.integrations')], "
            "[m for m in sys.modules if m.startswith('lalm_fast.integrations')]")
    subprocess.run([sys.executable, "-c", code], check=True)
