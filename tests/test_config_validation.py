"""Training config and CLI validation: every setting is checked
when the config is read, with one line naming the file and the key; resume skips a checkpoint
that fails its checksum."""

import dataclasses
import json
import os

import pytest
import torch

from lalm_fast import cli
from lalm_fast.settings import SettingError
from lalm_fast.training import config as config_module
from lalm_fast.training.checkpoint import Position, latest_checkpoint, save_checkpoint
from lalm_fast.training.config import RULES, TrainConfig

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.json")


def tiny(**changes):
    """The tiny config as a dict, with ``{"optim.grad_accum": 0}``-style changes."""
    data = json.load(open(TINY))
    for key, value in changes.items():
        section, name = key.split(".")
        data[section][name] = value
    return data


def write(tmp_path, content, name="config.json"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return str(path)


def test_every_setting_has_a_rule():
    specs = {"model": config_module.ModelSpec, "data": config_module.DataSpec, "optim": config_module.OptimSpec,
             "run": config_module.RunSpec, "align": config_module.AlignSpec}
    for section, spec in specs.items():
        assert set(RULES[section]) == {f.name for f in dataclasses.fields(spec)}, section


def test_case_08_grad_accum_zero_is_rejected_naming_key_and_file(tmp_path):
    path = write(tmp_path, tiny(**{"optim.grad_accum": 0}))
    with pytest.raises(SettingError) as info:
        TrainConfig.from_file(path)
    assert str(info.value) == f"{path}: optim.grad_accum must be >= 1, got 0"


BAD = [
    ({"optim.grad_accum": 0}, "optim.grad_accum must be >= 1"),
    ({"model.window_seconds": -1}, "model.window_seconds must be > 0"),
    ({"optim.total_steps": -5}, "optim.total_steps must be >= 1"),
    ({"optim.total_steps": 2.5}, "optim.total_steps must be an integer"),
    ({"data.eval_generate": -1}, "data.eval_generate must be >= 0"),
    ({"data.batch_size": -2}, "data.batch_size must be >= 1"),
    ({"optim.lr": "1e-4"}, "optim.lr must be a finite number"),
    ({"optim.lr": float("nan")}, "optim.lr must be a finite number"),
    ({"data.train": ""}, "data.train must be a JSONL manifest"),
    ({"data.train": "synthetic:0"}, "data.train must be 'synthetic:N' with N >= 1"),
    ({"data.train": "no/such/manifest.jsonl"}, "data.train names a file that does not exist"),
    ({"model.encoder": "no/such/encoder"}, "model.encoder must be 'tiny-random'"),
    ({"model.compressor": "segment:rate=inf"}, "model.compressor is not a valid compressor"),
    ({"model.compressor": {"kind": ["uniform"]}}, "model.compressor is not a valid compressor"),
    ({"run.mixed_precision": "fp8"}, "run.mixed_precision must be one of"),
    ({"model.freeze_encoder": "yes"}, "model.freeze_encoder must be true or false"),
]


@pytest.mark.parametrize("changes, words", BAD, ids=[w.split(" ")[0] + str(list(c.values())[0]) for c, w in BAD])
def test_bad_settings_give_one_line_naming_key_and_file(tmp_path, capsys, changes, words):
    path = write(tmp_path, tiny(**changes))
    with pytest.raises(SettingError, match=words.replace("(", r"\(")):
        TrainConfig.from_file(path)
    assert cli.main(["train", "--config", path, "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and path in err and words in err


@pytest.mark.parametrize("content, words", [
    (b"", "is not valid JSON"),
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "is not UTF-8 text"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"optim": 3}', "optim must be an object of settings"),
    (b'{"optim": {"bogus": 1}}', "optim has unknown field(s) ['bogus']"),
    (b"{}", "data.train must be a JSONL manifest"),
])
def test_bad_config_files_give_one_line_naming_the_file(tmp_path, capsys, content, words):
    path = write(tmp_path, content)
    assert cli.main(["train", "--config", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and path in err and words in err


def test_settings_changed_in_code_are_checked_when_training_starts(tmp_path):
    from lalm_fast.training import train

    config = TrainConfig.from_file(TINY, output_dir=str(tmp_path))
    config.optim.grad_accum = 0
    with pytest.raises(SettingError, match="optim.grad_accum must be >= 1"):
        train(config)


def test_eval_rejects_an_out_file_before_evaluating(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("x")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    for argv, words in (
        (["--model", str(tmp_path), "--manifest", str(manifest), "--out", str(out)], "exists and is not a folder"),
        (["--model", str(tmp_path / "nope"), "--manifest", str(manifest)], "is not a folder"),
        (["--model", str(tmp_path), "--manifest", str(tmp_path / "nope.jsonl")], "does not exist"),
        (["--model", str(tmp_path), "--manifest", str(manifest), "--limit", "-1"], "must be >= 1"),
    ):
        assert cli.main(["eval", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("lalm-fast eval: error:") and words in err and "\n" not in err


def _save_two_steps(folder):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for step in (2, 4):
        save_checkpoint(folder / "checkpoints", Position(step=step), model, optimizer, scheduler, keep_last=3)
    return folder / "checkpoints"


@pytest.mark.parametrize("damage", ["truncate", "delete", "step_json"])
def test_resume_falls_back_to_the_newest_verified_checkpoint(tmp_path, damage):
    checkpoints = _save_two_steps(tmp_path)
    assert latest_checkpoint(tmp_path).name == "step-00000004"
    newest = checkpoints / "step-00000004"
    if damage == "truncate":
        data = (newest / "trainable.safetensors").read_bytes()
        (newest / "trainable.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        (newest / "state.pt").unlink()
    else:
        (newest / "step.json").write_text('{"step": 4')
    with pytest.warns(UserWarning, match="skipping checkpoint .*step-00000004"):
        assert latest_checkpoint(tmp_path).name == "step-00000002"


def test_checkpoints_without_checksums_still_resume(tmp_path):
    checkpoints = _save_two_steps(tmp_path)
    step = checkpoints / "step-00000004" / "step.json"
    step.write_text(json.dumps({"step": 4, "epoch": 0, "batch": 0}))
    assert latest_checkpoint(tmp_path).name == "step-00000004"


def test_a_binary_manifest_is_named(tmp_path):
    from lalm_fast.data import DataError, read_manifest

    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(DataError, match=f"{path}: not UTF-8 text"):
        read_manifest(path)
