"""lalm_fast.reproduce (the miniature experiment) and the CTC projector warm-up, on tiny random models."""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("peft")
pytest.importorskip("soundfile")
pytest.importorskip("matplotlib")

from safetensors.torch import load_file  # noqa: E402

from lalm_fast import cli, reproduce as rep  # noqa: E402
from lalm_fast import training  # noqa: E402
from lalm_fast.training import TrainConfig, ctc_warmup, normalize_target  # noqa: E402

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.json")
TWO = ["uniform-x2", "uniform-x3-projector-only"]


def test_dry_run_writes_the_report_for_every_configuration(tmp_path):
    report = rep.reproduce(tmp_path, "tiny")
    names = [row["configuration"] for row in report["configurations"]]
    assert names == [c.name for c in rep.CONFIGURATIONS] and names[0] == rep.BASE.name
    for row in report["configurations"]:
        assert row["wer"] >= 0 and row["wer_guarded"] >= 0 and row["bleu"] >= 0 and row["audio_tokens_per_second"] > 0
        assert row["bleu_guarded"] >= 0 and (not row.get("zero_shot") or row["zero_shot"]["bleu_guarded"] >= 0)
        assert row["base_step"] == rep.PRESETS["tiny"].base_steps
        if row["configuration"] != rep.BASE.name:
            assert row["adapt_steps"] == rep.PRESETS["tiny"].adapt_steps and row["adapt_cpu_minutes"] >= 0
            # the control keeps the base's compressor: its zero-shot would be the base's row
            control = row["compressor"] == rep.BASE.compressor
            assert (row["zero_shot"] is None) if control else row["zero_shot"]["wer"] >= 0
    control = next(r for r in report["configurations"] if r["configuration"] == "base-25hz-adapted")
    assert control["compressor"] == rep.BASE.compressor and control["lora"] and control["adapt_steps"] > 0
    rates = {row["configuration"]: row["audio_tokens_per_second"] for row in report["configurations"]}
    assert rates["base-25hz-adapted"] == rates[rep.BASE.name] > rates["uniform-x2"] > rates["uniform-x3"] > rates["uniform-x4"]
    assert rates["uniform-x3"] == rates["downsample-x3"] == rates["uniform-x3-projector-only"]
    for name in ("report.md", "report.json", "report.png", "curve.png"):
        assert (tmp_path / name).stat().st_size > 0
    table = (tmp_path / "report.md").read_text()
    assert "| base-25hz | uniform:2 | - |" in table and "| base-25hz-adapted | uniform:2 | projector + LoRA |" in table
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["preset"] == "tiny" and saved["base"]["finished"] and saved["base"]["evaluations"]
    # paired WER differences, read back from the decoded utterances: each equals the rows' difference
    rows = {row["configuration"]: row for row in report["configurations"]}
    differences = {(d["configuration"], d["against"]): d for d in saved["paired_differences"]}
    assert set(differences) == {(n, rep.BASE.name) for n in names[1:]} | {("uniform-x3-projector-only", "uniform-x3")}
    for (name, other), record in differences.items():
        for key, column in (("as_decoded", "wer"), ("guarded", "wer_guarded")):
            d = record[key]
            assert d["difference"] == pytest.approx(rows[name][column] - rows[other][column], abs=1e-12)
            assert d["low"] <= d["high"] and d["utterances"] == rep.PRESETS["tiny"].test_utterances
        bleu = record["bleu"]
        assert bleu["difference"] == pytest.approx(rows[name]["bleu"] - rows[other]["bleu"], abs=1e-9)
        assert bleu["low"] <= bleu["high"] and bleu["utterances"] == rep.PRESETS["tiny"].test_utterances
    assert "| uniform-x3-projector-only | uniform-x3 |" in table and "bootstrap" in table


def test_a_report_is_written_again_from_its_saved_scores(tmp_path):
    rep.reproduce(tmp_path, "tiny", configurations=[rep.BASE.name, "uniform-x3", "uniform-x3-projector-only"])
    written = {name: (tmp_path / name).read_text() for name in ("report.json", "report.md")}
    older = json.loads(written["report.json"])
    older["wer_differences"] = older.pop("paired_differences")  # a report from before they held BLEU
    (tmp_path / "report.json").write_text(json.dumps(older))
    (tmp_path / "report.md").unlink()
    rep.rewrite_report(tmp_path)
    assert {name: (tmp_path / name).read_text() for name in written} == written


RESCORED = [rep.BASE.name, "uniform-x3", "uniform-x3-projector-only"]


def test_committed_adapters_are_rescored_on_more_test_utterances_training_nothing(tmp_path, monkeypatch):
    from lalm_fast import lalm_track
    from lalm_fast.evaluate import wer
    from lalm_fast.evaluate.model import read_predictions

    committed = tmp_path / "run"
    rep.reproduce(committed, "tiny", configurations=RESCORED)
    later = tmp_path / "later"  # a second committed run: its uniform-x3 replaces the first one's
    rep.reproduce(later, "tiny", configurations=["uniform-x3"], adapt_steps=rep.PRESETS["tiny"].adapt_steps + 1)

    def no_training(*args, **kwargs):
        raise AssertionError("rescoring trained a model")

    monkeypatch.setattr(training, "train", no_training)
    n = rep.PRESETS["tiny"].n_test  # more than the runs scored (test_utterances)
    assert n > rep.PRESETS["tiny"].test_utterances
    out = tmp_path / "rescored"
    report = rep.rescore(out, [committed, later], data=committed / "data", test_utterances=n)
    rows = {row["configuration"]: row for row in report["configurations"]}
    assert list(rows) == RESCORED
    assert rows["uniform-x3"]["model_dir"] == str(later / "adapters" / "uniform-x3")
    assert rows["uniform-x3"]["adapt_steps"] == rep.PRESETS["tiny"].adapt_steps + 1
    for name, row in rows.items():
        kept = json.loads((Path(row["model_dir"]) / "metrics.json").read_text())
        assert {k: row[k] for k in ("base_step", "adapt_steps", "adapt_cpu_minutes")} == \
               {k: kept[k] for k in ("base_step", "adapt_steps", "adapt_cpu_minutes")}
        assert row["zero_shot"] is None and row["rescored"]["test_utterances"] == {"asr": n, "st": n}
        decoded = read_predictions(lalm_track.decoded_path(out, name, "asr"))
        assert len(decoded) == n and len(read_predictions(lalm_track.decoded_path(out, name, "st"))) == n
        assert row["wer"] == wer([d["reference"] for d in decoded.values()],
                                 [d["hypothesis"] for d in decoded.values()]).wer
    assert all(d["as_decoded"]["utterances"] == d["bleu"]["utterances"] == n for d in report["paired_differences"])
    table = (out / "report.md").read_text()
    assert f"each scored on the first {n} utterances" in table
    assert "| projector, 2 steps |" in table  # the budget differs from the last run's (3 steps)
    # resumable: a second call scores nothing again; fewer utterances are scored anew
    calls = []
    monkeypatch.setattr(lalm_track, "score_model", lambda *args: calls.append(args) or no_training())
    assert rep.rescore(out, [committed, later], data=committed / "data", test_utterances=n)["configurations"] == \
        report["configurations"]
    assert calls == []
    with pytest.raises(AssertionError, match="trained a model"):
        rep.rescore(out, [committed], data=committed / "data", test_utterances=n - 1, configurations=["uniform-x3"])


def test_the_whisper_baseline_is_scored_again_for_other_utterances(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from lalm_fast import baselines
    from lalm_fast.data import Utterance

    scored = []

    def fake_baseline(utterances, **options):
        scored.append([u.id for u in utterances])
        result = SimpleNamespace(wer=len(utterances) / 10)
        return SimpleNamespace(wer=result, wer_guarded=result, groups={}, groups_guarded={},
                               ids=scored[-1], references=[u.text for u in utterances],
                               hypotheses=["a"] * len(utterances))

    monkeypatch.setattr(baselines, "whisper_baseline", fake_baseline)
    clips = [Utterance(audio=f"{i}.wav", text="a b", id=f"u{i}") for i in range(3)]
    first = rep.cached_whisper_baseline(tmp_path, clips[:2])
    assert rep.cached_whisper_baseline(tmp_path, clips[:2]) == first and scored == [["u0", "u1"]]
    assert rep.cached_whisper_baseline(tmp_path, clips)["wer"] == pytest.approx(0.3)
    assert scored == [["u0", "u1"], ["u0", "u1", "u2"]] and "ids" not in first
    decoded = tmp_path / "scores" / "whisper-asr.jsonl"  # asked for its decoded utterances: scored again
    rep.cached_whisper_baseline(tmp_path, clips, decoded)
    assert len(scored) == 3 and rep.cached_whisper_baseline(tmp_path, clips, decoded) and len(scored) == 3
    assert [line["hypothesis"] for line in map(json.loads, decoded.read_text().splitlines())] == ["a"] * 3


def test_the_base_is_paired_with_whispers_own_decoder_when_its_decoded_clips_are_kept(tmp_path):
    from lalm_fast.evaluate import wer_difference
    from lalm_fast.evaluate.model import write_predictions
    from lalm_fast.lalm_report import paired_differences
    from lalm_fast.lalm_track import WHISPER, decoded_path

    references = [f"verse {i} of the book" for i in range(20)]
    base = [r if i % 4 else "verse of the book" for i, r in enumerate(references)]
    whisper = [r if i % 2 else "verse" for i, r in enumerate(references)]
    for name, hypotheses in ((rep.BASE.name, base), (WHISPER, whisper)):
        write_predictions(decoded_path(tmp_path, name, "asr"), [
            {"id": f"u{i:02d}", "reference": r, "hypothesis": h}
            for i, (r, h) in enumerate(zip(references, hypotheses))])
    rows = [{"configuration": rep.BASE.name, "compressor": rep.BASE.compressor, "lora": True}]
    [record] = paired_differences(tmp_path, rows)
    assert (record["configuration"], record["against"], record["bleu"]) == (rep.BASE.name, WHISPER, None)
    assert record["as_decoded"]["difference"] == pytest.approx(wer_difference(references, base, whisper).difference)
    assert record["as_decoded"]["high"] < 0  # the base is better on every utterance it differs on


def test_guarded_bleu_scores_the_kept_translations_cut_before_their_loops(tmp_path):
    from lalm_fast.evaluate import bleu
    from lalm_fast.evaluate.model import write_predictions
    from lalm_fast.lalm_report import guarded_bleu
    from lalm_fast.lalm_track import decoded_path

    references = [f"y dijo el señor a su siervo {i} que fuese a la ciudad" for i in range(12)]
    hypotheses = [r.replace("siervo", "hijo") for r in references]
    looping = [h if i % 3 else h + " a la ciudad" * 8 for i, h in enumerate(hypotheses)]
    write_predictions(decoded_path(tmp_path, "uniform-x3", "st"), [
        {"id": f"u{i:02d}", "reference": r, "hypothesis": h} for i, (r, h) in enumerate(zip(references, looping))])
    guarded = guarded_bleu(tmp_path, "uniform-x3")
    assert guarded == pytest.approx(bleu(references, hypotheses).score)  # each loop cut after its first copy
    assert bleu(references, looping).score < guarded < 100
    assert guarded_bleu(tmp_path, "uniform-x4") is None


@pytest.mark.parametrize("argv, message", [
    (["--rescore", "{run}", "--data", "{run}/data", "--test-utterances", "9"], "fewer than --test-utterances 9"),
    (["--rescore", "{run}", "--data", "{run}/data", "--test-utterances", "0"], "must be >= 1"),
    (["--rescore", "{run}", "--data", "{run}/data", "--configs", "uniform-x4"],
     "['uniform-x4'] not among the adapters"),
    (["--rescore", "{run}/data", "--data", "{run}/data"], "not a committed LALM-track run"),
    (["--rescore", "{run}", "--data", "{run}/data", "--steps", "3"], "--rescore trains nothing: --steps"),
    (["--rescore", "{run}"], "--rescore needs --data"),
])
def test_bad_rescore_arguments_give_one_clear_error_line(argv, message, capsys, tmp_path):
    run = tmp_path / "run"
    rep.reproduce(run, "tiny", configurations=[rep.BASE.name])
    argv = [arg.format(run=run) for arg in argv]
    capsys.readouterr()  # the run's progress bars
    assert cli.main(["reproduce", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("lalm-fast reproduce: error:")


def test_the_base_warm_up_trains_once_and_the_adapted_models_start_from_the_base(tmp_path):
    report = rep.reproduce(tmp_path, "tiny", configurations=["uniform-x3-projector-only"])
    row = report["configurations"][0]
    base = load_file(tmp_path / "runs" / rep.BASE.name / "final" / "adapter_model.safetensors")
    adapted = load_file(tmp_path / "runs" / row["configuration"] / "final" / "adapter_model.safetensors")
    assert base.keys() == adapted.keys()
    assert all(torch.equal(base[k], adapted[k]) for k in base)  # projector only: the base's LoRA, untouched
    assert (tmp_path / "runs" / rep.BASE.name / training.CTC_WARMUP / "warmup.json").exists()


def test_a_rerun_skips_finished_configurations_and_finishes_the_rest(tmp_path, monkeypatch):
    rep.reproduce(tmp_path, "tiny", configurations=TWO[:1])
    calls = []
    original = training.train

    def counting(config, resume=False, **options):
        calls.append(config.run.output_dir)
        return original(config, resume, **options)

    monkeypatch.setattr(training, "train", counting)
    report = rep.reproduce(tmp_path, "tiny", configurations=TWO)
    assert [os.path.basename(c) for c in calls] == [TWO[1]]  # neither the base nor the finished one trained again
    assert [row["configuration"] for row in report["configurations"]] == TWO
    assert report["configurations"][1]["lora"] is False
    shutil.rmtree(tmp_path / "runs" / TWO[0])  # scores kept, weights gone: adapted again, not exported from nothing
    calls.clear()
    rep.reproduce(tmp_path, "tiny", configurations=TWO)
    assert [os.path.basename(c) for c in calls] == [TWO[0]]
    assert (tmp_path / "adapters" / TWO[0] / "adapter_model.safetensors").exists()
    # another adaptation budget: redone from the base on its own schedule, not skipped or stretched
    steps = rep.PRESETS["tiny"].adapt_steps + 1
    report = rep.reproduce(tmp_path, "tiny", configurations=TWO[:1], adapt_steps=steps)
    assert report["configurations"][0]["adapt_steps"] == report["configurations"][0]["adapt_steps_this_call"] == steps


def test_a_run_stopped_during_an_adaptation_keeps_its_zero_shot_scores(tmp_path, monkeypatch):
    from lalm_fast import lalm_track

    first = rep.reproduce(tmp_path, "tiny", configurations=["uniform-x3"])["configurations"][0]
    (tmp_path / "scores" / "uniform-x3.json").unlink()  # stopped before its adapted scores were written
    shutil.rmtree(tmp_path / "runs" / "uniform-x3")
    scored, original = [], lalm_track.score_model
    monkeypatch.setattr(lalm_track, "score_model", lambda *args: scored.append(1) or original(*args))
    again = rep.reproduce(tmp_path, "tiny", configurations=["uniform-x3"])["configurations"][0]
    assert len(scored) == 1 and again["zero_shot"] == first["zero_shot"]  # only the adapted model was scored
    assert again["adapt_steps_this_call"] == rep.PRESETS["tiny"].adapt_steps


def test_more_test_utterances_score_the_models_again_without_adapting_them_again(tmp_path, monkeypatch):
    from lalm_fast import lalm_track
    from lalm_fast.evaluate.model import read_predictions

    names = [rep.BASE.name, "uniform-x3"]
    first = {row["configuration"]: row
             for row in rep.reproduce(tmp_path, "tiny", configurations=names)["configurations"]}
    n = rep.PRESETS["tiny"].n_test
    assert n > rep.PRESETS["tiny"].test_utterances
    original = rep.ensure_corpora  # a corpus of another size than the preset's: the report says which
    monkeypatch.setattr(rep, "ensure_corpora", lambda *args: {**original(*args), "n_train": 8, "n_test": n})
    report = rep.reproduce(tmp_path, "tiny", configurations=names, test_utterances=n)
    assert report["settings"]["test_utterances"] == n and report["settings"]["n_train"] == 8
    rows = {row["configuration"]: row for row in report["configurations"]}
    for name in ("uniform-x3", "uniform-x3-zero-shot", rep.BASE.name):
        assert len(read_predictions(lalm_track.decoded_path(tmp_path, name, "asr"))) == n
    assert rows["uniform-x3"]["test_set"]["asr"]["utterances"] == n
    assert rows["uniform-x3"]["adapt_steps_this_call"] == 0  # scored again, not adapted again: its cost is kept
    assert {k: rows["uniform-x3"][k] for k in ("adapt_steps", "adapt_cpu_minutes", "loss_first", "loss_last")} == \
           {k: first["uniform-x3"][k] for k in ("adapt_steps", "adapt_cpu_minutes", "loss_first", "loss_last")}
    assert all(d["as_decoded"]["utterances"] == n for d in report["paired_differences"])
    # a call killed mid-adaptation leaves no record: its steps are costed at the recorded calls' rate
    sessions = tmp_path / "runs" / "uniform-x3" / "sessions.jsonl"
    [trained] = [json.loads(line) for line in sessions.read_text().splitlines() if json.loads(line)["steps"]]
    sessions.write_text(json.dumps({**trained, "steps": 1, "cpu_seconds": 6.0, "wall_seconds": 9.0}) + "\n")
    record = lalm_track._adaptation_record(sessions.parent, total_steps=3)
    assert (record["adapt_cpu_minutes"], record["adapt_wall_seconds"], record["adapt_cost_measured_steps"]) == \
        (0.3, 27.0, 1)
    monkeypatch.setattr(lalm_track, "score_model", lambda *args: pytest.fail("scored again"))
    assert rep.reproduce(tmp_path, "tiny", configurations=names, test_utterances=n)["configurations"] == \
        report["configurations"]


def test_a_base_trained_in_pieces_gives_the_configurations_its_current_step(tmp_path):
    tiny = 1e-9  # minutes: every call stops after one base step
    first = rep.reproduce(tmp_path, "tiny", configurations=TWO[:1], base_minutes=tiny)
    assert first["base"]["step"] == 1 and not first["base"]["finished"]
    assert first["configurations"][0]["base_step"] == 1
    assert first["configurations"][0]["model_dir"].endswith(os.path.join(TWO[0], "final"))
    assert rep.reproduce(tmp_path, "tiny", base_minutes=tiny, base_only=True)["step"] == 2
    second = rep.reproduce(tmp_path, "tiny", configurations=TWO[:1])  # no budget: the schedule's end
    assert second["base"]["step"] == rep.PRESETS["tiny"].base_steps and second["base"]["finished"]
    assert second["configurations"][0]["base_step"] == rep.PRESETS["tiny"].base_steps  # redone from the new base
    straight = tmp_path / "straight"
    rep.reproduce(straight, "tiny", base_only=True)
    for name in ("projector.safetensors", "adapter_model.safetensors"):
        pieces = load_file(tmp_path / "runs" / rep.BASE.name / "final" / name)
        whole = load_file(straight / "runs" / rep.BASE.name / "final" / name)
        assert all(torch.equal(pieces[k], whole[k]) for k in whole)


def test_every_base_training_call_is_recorded_also_when_sigterm_or_ctrl_c_stops_it(tmp_path, monkeypatch):
    from lalm_fast.training import loop

    rep.reproduce(tmp_path, "tiny", base_minutes=1e-9, base_only=True)  # one step, then the time budget
    original, calls = loop._Loop._step, []

    def step_then_terminate(self, position):
        calls.append(position.step)
        loss = original(self, position)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(loop._Loop, "_step", step_then_terminate)
    with pytest.raises(SystemExit):
        rep.reproduce(tmp_path, "tiny", base_only=True)
    monkeypatch.undo()

    def interrupted(self, position):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop._Loop, "_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rep.reproduce(tmp_path, "tiny", base_only=True)
    monkeypatch.undo()
    rep.reproduce(tmp_path, "tiny", base_only=True)
    sessions = [json.loads(line) for line in
                (tmp_path / "runs" / rep.BASE.name / "sessions.jsonl").read_text().splitlines()]
    end = rep.PRESETS["tiny"].base_steps
    assert [(s["stopped_by"], s["ended_at_step"], s["steps"], s["finished"]) for s in sessions] == [
        ("time budget", 1, 1, False), ("SIGTERM", 3, 2, False), ("Ctrl-C", 3, 0, False),
        ("end of schedule", end, end - 3, True)]
    assert all(s["wall_seconds"] >= 0 and s["cpu_seconds"] >= 0 for s in sessions)
    assert all(s["wall_seconds"] > 0 for s in sessions if s["steps"])  # the Ctrl-C one may round to 0.0


def test_a_new_run_continues_a_committed_base_from_its_float16_export(tmp_path):
    committed = tmp_path / "committed"
    rep.reproduce(committed, "tiny", configurations=[rep.BASE.name], base_minutes=1e-9)  # stops after step 1
    exported = json.loads((committed / "adapters" / rep.BASE.name / "metrics.json").read_text())
    assert exported["base_position"]["step"] == 1
    fresh = tmp_path / "fresh"
    base = rep.reproduce(fresh, "tiny", continue_from=str(committed), base_only=True)
    assert base["step"] == rep.PRESETS["tiny"].base_steps and base["finished"]
    curve = json.loads((committed / "curve.json").read_text())["train"]
    log = [json.loads(line) for line in (fresh / "runs" / rep.BASE.name / "train_log.jsonl").read_text().splitlines()]
    assert log[0] == curve[0] and [r["step"] for r in log] == [1, 2, 3, 4]  # the committed step, then its own
    seeded = training.latest_checkpoint(fresh / "runs" / rep.BASE.name)
    assert seeded is not None and not (fresh / "runs" / rep.BASE.name / training.CTC_WARMUP).exists()
    with pytest.raises(ValueError, match="not a committed LALM-track run"):
        rep.reproduce(tmp_path / "other", "tiny", continue_from=str(tmp_path), base_only=True)


def test_a_base_goes_on_over_another_training_set_only_from_a_new_epoch(tmp_path, capsys):
    from lalm_fast.lalm_track import manifest_identity

    committed = tmp_path / "committed"
    rep.reproduce(committed, "tiny", configurations=[rep.BASE.name], base_minutes=1e-9)  # stops after step 1
    exported = json.loads((committed / "adapters" / rep.BASE.name / "metrics.json").read_text())
    other = {"data": str(tmp_path / "other-data"), "seed": 1}  # the tiny preset's tone clips of another seed
    with pytest.raises(rep.ReproduceError, match="base trained on another training set .*--new-epoch"):
        rep.reproduce(tmp_path / "a", "tiny", **other, continue_from=str(committed), base_only=True)
    with pytest.raises(rep.ReproduceError, match="trains on another training set"):  # its own checkpoint, too
        rep.reproduce(committed, "tiny", **other, base_minutes=1e-9, base_only=True)
    fresh = tmp_path / "fresh"
    base = rep.reproduce(fresh, "tiny", **other, continue_from=str(committed), new_epoch=True, base_minutes=1e-9,
                         base_only=True)
    position = exported["base_position"]
    assert base["position"] == {"step": position["step"] + 1, "epoch": position["epoch"] + 1, "batch": 1}
    trained_on = manifest_identity(committed / "data" / "train_mixed.jsonl")
    assert base["train_set"] != exported["base_train_set"] == trained_on
    report = rep.reproduce(fresh, "tiny", **other, configurations=[rep.BASE.name])  # resumes its own checkpoint
    assert report["configurations"][0]["base_train_set"] == base["train_set"] and report["base"]["finished"]
    capsys.readouterr()
    assert cli.main(["reproduce", "--dry-run", "--out", str(fresh), "--continue-from", str(committed),
                     "--new-epoch", "--base-only"]) == 2
    assert "has no checkpoint of its own" in capsys.readouterr().err
    assert cli.main(["reproduce", "--dry-run", "--out", str(fresh), "--new-epoch"]) == 2
    assert "it needs --continue-from" in capsys.readouterr().err


def test_ctc_warmup_lowers_its_loss_and_is_reused_on_resume(tmp_path):
    config = TrainConfig.from_file(TINY, output_dir=str(tmp_path), progress=False)
    config.data.train, config.data.batch_size = "synthetic:4", 4  # one fixed batch
    config.align.ctc_steps, config.align.lr = 12, 1e-2
    model = training.build_model(config.model)
    dataset = training.open_dataset(config.data.train, config.model, config.data, tmp_path)
    before = {k: v.clone() for k, v in model.projector.state_dict().items()}
    summary = ctc_warmup(model, dataset, config, tmp_path, progress=False)
    assert summary["steps"] == 12 and summary["infeasible_fraction"] == 0
    assert sum(summary["losses"][-3:]) / 3 < summary["losses"][0] - 0.5
    trained = {k: v.clone() for k, v in model.projector.state_dict().items()}
    assert any(not torch.equal(before[k], trained[k]) for k in before)
    fresh = training.build_model(config.model)  # a rerun loads the saved warm-up instead of training again
    assert ctc_warmup(fresh, dataset, config, tmp_path, progress=False)["losses"] == summary["losses"]
    assert all(torch.equal(fresh.projector.state_dict()[k], trained[k]) for k in trained)
    config.align.ctc_steps = 5  # changed settings: the saved warm-up is not reused
    assert ctc_warmup(training.build_model(config.model), dataset, config, tmp_path, progress=False)["steps"] == 5


def test_train_with_warmup_records_it_and_auto_task_mixes_asr_and_st(tmp_path):
    rep._tiny_corpora(tmp_path / "data", 0)
    from lalm_fast.data import read_manifest, write_manifest

    mixed = read_manifest(tmp_path / "data" / "asr_train.jsonl") + read_manifest(tmp_path / "data" / "st_train.jsonl")
    write_manifest(tmp_path / "mixed.jsonl", mixed)
    config = TrainConfig.from_file(TINY, output_dir=str(tmp_path / "run"), progress=False)
    config.data.train, config.data.eval, config.data.task = str(tmp_path / "mixed.jsonl"), None, "auto"
    config.align.ctc_steps, config.optim.total_steps = 3, 2
    result = training.train(config)
    assert result.warmup["steps"] == 3 and result.step == 2
    dataset = training.open_dataset(str(tmp_path / "mixed.jsonl"), config.model, config.data, tmp_path)
    batch = dataset.load(list(range(len(dataset.utterances))))
    assert {json.dumps(t) for t in batch.tasks} == {'"transcribe"', '{"task": "translate", "lang": "Spanish"}'}
    st = [i for i, t in enumerate(batch.tasks) if t != "transcribe"][0]
    assert batch[2][st] == " ".join(reversed(batch.texts[st].split()))  # the target is the translation


def test_normalize_target():
    assert normalize_target("He said, \"Don't go!\" -- 'Now'.") == "he said don't go now"
    assert normalize_target("¿Dónde está?") == "dónde está"


@pytest.mark.parametrize("argv, message", [
    (["--quick", "--dry-run"], "not allowed with argument"),
    (["--dry-run", "--configs", "uniform-x9"], "unknown configuration(s) ['uniform-x9']"),
    (["--dry-run", "--encoder", "/no/such/folder"], "--encoder '/no/such/folder' is not a local checkpoint"),
    (["--dry-run", "--steps", "0"], "--steps must be >= 1"),
    (["--dry-run", "--base-minutes", "-1"], "--base-minutes must be >= 0"),
    (["--dry-run", "--base-minutes", "0"], "has no base checkpoint yet"),
    (["--track", "whisper", "--dry-run", "--base-only"], "--base-only apply to the lalm track only"),
    (["--dry-run", "--jobs", "0"], "--jobs must be >= 1"),
    (["--dry-run", "--test-utterances", "0"], "--test-utterances must be >= 1"),
    (["--dry-run", "--test-utterances", "9"], "has 8 asr test utterances, fewer than --test-utterances 9"),
    (["--track", "whisper", "--dry-run", "--test-utterances", "3"], "--test-utterances apply to the lalm track only"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_give_one_clear_error_line(argv, message, capsys, tmp_path):
    assert cli.main(["reproduce", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("lalm-fast reproduce: error:")


def test_two_worker_processes_give_the_same_report_as_one(tmp_path):
    one = rep.reproduce(tmp_path / "one", "tiny", configurations=TWO, jobs=1)
    two = rep.reproduce(tmp_path / "two", "tiny", configurations=TWO, jobs=2)
    for a, b in zip(one["configurations"], two["configurations"]):
        assert a["configuration"] == b["configuration"]
        assert a["audio_tokens_per_second"] == b["audio_tokens_per_second"]
        assert a["asr_loss"] == pytest.approx(b["asr_loss"], rel=1e-3)
