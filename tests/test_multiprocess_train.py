"""Training with several processes: ``accelerate launch --multi_gpu --num_processes 2`` on the CPU (a gloo group)
against one process with the same global batch (the same micro-batch size, and ``grad_accum`` times the
processes), for an AudioLM and a native Qwen2-Audio; resuming with another process count.

The unit-tier tests check the pieces in one process: the shared data stream, per-process RNG seeds and states
in checkpoints, the warning when a resume changes the global batch. The ``slow`` ones launch real processes
(tiny random models, synthetic clips, a few steps, eight launches) and compare the trainable weights:
the target is a max abs difference under 1e-5 (fp32). Dropout is 0 there: each process draws its own dropout
masks, which one process accumulating the same micro-batches cannot draw, so with dropout the runs differ; a
two-process run resumed by two processes is bitwise the same with dropout on.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import warnings

import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("peft")
pytest.importorskip("soundfile")

from safetensors.torch import load_file  # noqa: E402

from lalm_fast.data import write_manifest  # noqa: E402
from lalm_fast.training import checkpoint as ckpt  # noqa: E402
from lalm_fast.training import (TrainConfig, build_model, ctc_warmup, epoch_batches, loop,  # noqa: E402
                                make_synthetic, open_dataset)
from lalm_fast.training.config import DataSpec  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.json")
TOLERANCE = 1e-5


# -- in one process ----------------------------------------------------------------------------------------------


class _Durations:
    def __init__(self, count):
        self.durations = [0.2 + 0.01 * (i % 7) for i in range(count)]


@pytest.mark.parametrize("clips, batch_size", [(16, 4), (10, 4), (3, 4)])   # 4, 3 (uneven) and 1 batch per epoch
@pytest.mark.parametrize("world, accum", [(2, 1), (2, 3), (3, 2)])
def test_processes_read_in_a_step_what_one_process_accumulating_as_many_reads(clips, batch_size, world, accum):
    dataset, spec = _Durations(clips), DataSpec(train="synthetic:1", batch_size=batch_size)
    one = loop._Stream(dataset, spec, seed=3, rank=0, world=1)
    many = [loop._Stream(dataset, spec, seed=3, rank=r, world=world) for r in range(world)]
    alone, together = ckpt.Position(), ckpt.Position()
    for _ in range(5):
        expected = [one.next(alone) for _ in range(world * accum)]
        got = []
        for _ in range(accum):                              # each process reads from its copy of the position
            positions = [ckpt.Position(**vars(together)) for _ in many]
            got += [stream.next(position) for stream, position in zip(many, positions)]
            assert all(position == positions[0] for position in positions)
            together = positions[0]
        assert got == expected and together == alone
    # One process reads every epoch's batches whole, in plan order, across epoch ends: nothing is dropped.
    plans = [batch for epoch in range(3) for batch in epoch_batches(dataset.durations, spec, 3, epoch)]
    position = ckpt.Position()
    assert [one.next(position) for _ in plans] == plans and position == ckpt.Position(epoch=3)


def test_process_seeds_and_rng_states_per_process(tmp_path):
    assert ckpt.process_seed(7, 0) == 7                     # one process draws what it always drew
    seeds = {ckpt.process_seed(7, rank, step) for rank in range(3) for step in (0, 5)}
    assert len(seeds) == 6

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    states = []
    for seed in (10, 11):
        torch.manual_seed(seed)
        states.append(ckpt.rng_state())
    path = ckpt.save_checkpoint(tmp_path, ckpt.Position(step=4, epoch=1, batch=2), model, optimizer, scheduler, 2,
                                rng_states=states, layout={"processes": 2, "grad_accum": 1})
    assert ckpt.checkpoint_record(path)["processes"] == 2

    def draws(process_index):
        position = ckpt.load_checkpoint(path, model, optimizer, scheduler, process_index, seed=7)
        assert (position.step, position.epoch, position.batch) == (4, 1, 2)
        return torch.rand(3)

    def fresh(seed):
        torch.manual_seed(seed)
        return torch.rand(3)

    assert torch.equal(draws(0), fresh(10)) and torch.equal(draws(1), fresh(11))  # each its own saved stream
    assert torch.equal(draws(2), fresh(ckpt.process_seed(7, 2, 4)))               # one the writer did not have


def test_a_resume_that_changes_the_global_batch_warns(tmp_path):
    path = tmp_path / "step-00000003"
    path.mkdir()
    (path / ckpt.STEP_FILE).write_text(json.dumps({"step": 3, "epoch": 0, "batch": 6, "processes": 2,
                                                   "grad_accum": 1}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop._check_global_batch(path, 1, 2)                # 2 x 1 = 1 x 2: the same run
    with pytest.warns(UserWarning, match=r"2 process\(es\) x grad_accum 1 = 2 .* 4 x 1 = 4 changes the global"):
        loop._check_global_batch(path, 4, 1)


def test_processes_that_accelerate_does_not_join_stop_the_run(monkeypatch):
    import accelerate

    made = []

    class Alone:                                         # what accelerate forms when it does not see the group
        num_processes = 1

        def __init__(self, **options):
            made.append(options)

    monkeypatch.setattr(accelerate, "Accelerator", Alone)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if hasattr(torch, "accelerator"):
        monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="2 processes were launched, but accelerate formed a group of 1"):
        loop._accelerator("no")
    assert made == [{"mixed_precision": "no", "cpu": True}]  # on the CPU, asked for the gloo group
    monkeypatch.delenv("WORLD_SIZE")
    assert loop._accelerator("no").num_processes == 1 and made[-1]["cpu"] is False


def test_the_ctc_warm_up_leaves_no_gradient_for_the_first_lm_step(tmp_path):
    """The processes that load the main process's saved warm-up have no CTC gradient on the projector, so the
    one that ran it must not keep one either (nor one process alone: its first LM step would add it in)."""
    config = TrainConfig.from_file(TINY, output_dir=str(tmp_path), progress=False)
    config.data.train, config.align.ctc_steps = "synthetic:4", 2
    model = build_model(config.model)
    ctc_warmup(model, open_dataset(config.data.train, config.model, config.data, tmp_path), config, tmp_path,
               progress=False)
    assert all(parameter.grad is None for parameter in model.projector.parameters())


# -- launched processes --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def run_train(config: dict, folder, processes: int, resume: bool = False) -> str:
    """``lalm-fast train`` on ``config`` (written into ``folder``) in ``processes`` CPU processes; its stdout."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json.in"
    path.write_text(json.dumps(config))
    train = ["-m", "lalm_fast.cli", "train", "--config", str(path)] + (["--resume"] if resume else [])
    command = [sys.executable, *train]
    if processes > 1:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(_free_port()), *train]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
           "CUDA_VISIBLE_DEVICES": "",                   # the CPU even on a GPU machine: gloo, fp32, one thread each
           "OMP_NUM_THREADS": "1", "HF_HOME": str(folder / "hf-home")}   # no user accelerate config
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    return done.stdout


def trained(run_dir, step: int):
    return load_file(run_dir / "checkpoints" / f"step-{step:08d}" / "trainable.safetensors")


def max_difference(a, b) -> float:
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


def losses(run_dir) -> dict:
    return {r["step"]: r["loss"] for r in map(json.loads, (run_dir / loop.TRAIN_LOG).read_text().splitlines())}


def audio_lm_config(output_dir, grad_accum: int) -> dict:
    config = json.loads(open(TINY).read())
    config["model"]["lora"]["dropout"] = 0.0
    config["data"].update(train="synthetic:16", eval=None)                  # 4 micro-batches of 4 per epoch
    config["optim"]["grad_accum"] = grad_accum
    config["align"] = {"ctc_steps": 3}                                       # run by the main process alone
    config["run"].update(output_dir=str(output_dir), eval_every=0, save_every=3, keep_last=4)
    return config


@pytest.fixture(scope="module")
def audio_lm_runs(tmp_path_factory):
    """One process accumulating 2 micro-batches, and 2 processes accumulating 1, six steps each."""
    root = tmp_path_factory.mktemp("audio-lm")
    run_train(audio_lm_config(root / "one", 2), root / "one", 1)
    run_train(audio_lm_config(root / "two", 1), root / "two", 2)
    return root


@pytest.mark.slow
def test_two_processes_train_an_audio_lm_as_one_process_does(audio_lm_runs):
    one, two = audio_lm_runs / "one", audio_lm_runs / "two"
    for step in (3, 6):
        difference = max_difference(trained(one, step), trained(two, step))
        print(f"AudioLM, step {step}: max abs weight difference {difference:.3g}")
        assert difference < TOLERANCE
    assert losses(two) == pytest.approx(losses(one), abs=2e-5)           # the logged loss is every process's
    records = [ckpt.checkpoint_record(run / "checkpoints" / "step-00000006") for run in (one, two)]
    assert [(r["epoch"], r["batch"], r["processes"], r["grad_accum"]) for r in records] == [(3, 0, 1, 2), (3, 0, 2, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)])
def test_a_checkpoint_resumes_with_another_process_count(audio_lm_runs, first, then):
    """Steps 1-3 in ``first`` processes, 4-6 in ``then`` (grad_accum keeping the global batch): the weights of
    six steps in one process."""
    source = audio_lm_runs / {1: "one", 2: "two"}[first]
    run_dir = audio_lm_runs / f"{first}-then-{then}"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(source / "checkpoints" / "step-00000003", run_dir / "checkpoints" / "step-00000003")
    run_train(audio_lm_config(run_dir, 2 // then), run_dir, then, resume=True)
    reference = audio_lm_runs / "one"
    difference = max_difference(trained(reference, 6), trained(run_dir, 6))
    print(f"AudioLM, {first} then {then} process(es): max abs weight difference {difference:.3g}")
    assert difference < TOLERANCE
    assert losses(run_dir) == pytest.approx({s: v for s, v in losses(reference).items() if s > 3}, abs=2e-5)


@pytest.mark.slow
def test_two_processes_train_a_native_model_as_one_process_does(tmp_path):
    """Qwen2-Audio with LoRA, micro-batches of one clip, one of which fails to decode (skip_bad): the process
    that reads it still takes part in the gradient all-reduce, with nothing to add."""
    from tests.test_native_train import native_config, save_qwen2_audio

    base = save_qwen2_audio(tmp_path / "base")
    utterances = make_synthetic(tmp_path / "clips", 8)
    (tmp_path / "clips" / "utt0003.flac").write_bytes(b"not audio")         # its duration is in the manifest
    write_manifest(tmp_path / "clips.jsonl", utterances)

    def config(name, grad_accum):
        data = native_config(base, tmp_path / name, **{"data.train": str(tmp_path / "clips.jsonl"), "data.eval": None,
                                                       "data.batch_size": 1, "data.skip_bad": True,
                                                       "optim.grad_accum": grad_accum, "run.keep_last": 3})
        data["model"]["lora"]["dropout"] = 0.0
        return data

    out_one = run_train(config("one", 2), tmp_path / "one", 1)
    out_two = run_train(config("two", 1), tmp_path / "two", 2)
    for step in (2, 4, 6):
        difference = max_difference(trained(tmp_path / "one", step), trained(tmp_path / "two", step))
        print(f"native Qwen2-Audio, step {step}: max abs weight difference {difference:.3g}")
        assert difference < TOLERANCE
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), abs=2e-5)
    summary = re.compile(r"trained to step 6; model in \S+; (.*)")
    assert summary.findall(out_one) == ["skipped 2 utterance(s) (corrupt: 2)"]
    assert summary.findall(out_two) == ["skipped 2 utterance(s) (corrupt: 2)"] * 2     # summed over processes


@pytest.mark.slow
def test_two_processes_resume_exactly_with_dropout(tmp_path):
    """Each process saves its own RNG state, so with dropout on a resumed two-process run draws the masks of an
    uninterrupted one: bitwise the same weights."""
    def config(name):
        data = audio_lm_config(tmp_path / name, 1)
        data["model"]["lora"]["dropout"] = 0.2
        data["align"] = {}
        data["optim"]["total_steps"], data["run"]["save_every"] = 4, 2
        return data

    run_train(config("straight"), tmp_path / "straight", 2)
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-00000002",
                    tmp_path / "resumed" / "checkpoints" / "step-00000002")
    run_train(config("resumed"), tmp_path / "resumed", 2, resume=True)
    expected, got = trained(tmp_path / "straight", 4), trained(tmp_path / "resumed", 4)
    assert expected.keys() == got.keys() and all(torch.equal(expected[name], got[name]) for name in expected)
    assert losses(tmp_path / "resumed") == {s: v for s, v in losses(tmp_path / "straight").items() if s > 2}
