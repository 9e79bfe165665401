"""Checkpoints of a training run: the trainable weights, optimiser, scheduler, RNG states (one per process) and
the position in the data stream, written atomically so a resumed run takes the same steps."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lalm_fast.data.files import atomic_directory

__all__ = ["CHECKPOINT", "STEP_FILE", "Position", "checkpoint_record", "latest_checkpoint", "load_checkpoint",
           "process_seed", "rng_state", "save_checkpoint"]

STEP_FILE = "step.json"         # written last into a checkpoint: its presence marks it complete
CHECKSUMS = "sha256"            # key in STEP_FILE: the sha256 of every other file, checked on resume
CHECKPOINT = re.compile(r"^step-(\d{8})$")


@dataclass
class Position:
    step: int = 0       # optimizer steps done
    epoch: int = 0      # position in the data stream at that step: the next micro-batch of the epoch's plan
    batch: int = 0      # that no process has read (the same for any number of processes)


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    """This process's torch / numpy / python (and CUDA) RNG states."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def process_seed(seed: int, process_index: int, step: int = 0) -> int:
    """The torch seed of process ``process_index`` starting at ``step`` without a saved RNG state: the run's
    seed for the first process of a fresh run (so one process draws what it always drew), else one drawn from
    all three, so that processes draw different dropout masks."""
    if process_index == 0 and step == 0:
        return seed
    return int(np.random.SeedSequence([seed, process_index, step]).generate_state(1)[0])


def save_checkpoint(folder: Path, position: Position, model, optimizer, scheduler, keep_last: int,
                    rng_states: Optional[list[dict]] = None, layout: Optional[dict] = None) -> Path:
    """Write ``folder/step-NNNNNNNN`` atomically: files go to a temporary folder, ``step.json``
    last, then one ``os.replace``; a crash leaves the previous checkpoints as they were.

    ``rng_states``: the RNG state of every process, by process index (default: this process's alone);
    ``layout``: recorded in ``step.json`` (the run writes its process count and ``grad_accum``)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step-{position.step:08d}"
    if (target / STEP_FILE).exists():
        return target  # this step is saved already (e.g. the final save after a periodic one)
    shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover of the same step
    with atomic_directory(target) as staging:
        save_file(_trainable_state(model), staging / "trainable.safetensors")
        rng_states = rng_states or [rng_state()]
        # "rng" is the first process's state, where a one-process run has always read it.
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states[0],
                    "rng_per_process": rng_states}, staging / "state.pt")
        sums = {name: _sha256(staging / name) for name in ("trainable.safetensors", "state.pt")}
        (staging / STEP_FILE).write_text(json.dumps({**asdict(position), **(layout or {}), CHECKSUMS: sums}))
    for old in _complete_checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _complete_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CHECKPOINT.match(p.name) and (p / STEP_FILE).exists()]
    return sorted(found, key=lambda p: p.name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(path: Path) -> Optional[str]:
    """None if the checkpoint's files match the checksums written with it, else what is wrong.
    (Checkpoints from before checksums were written pass when their files are present.)"""
    try:
        record = json.loads((path / STEP_FILE).read_text())
        sums = record.get(CHECKSUMS, {name: None for name in ("trainable.safetensors", "state.pt")})
    except (OSError, ValueError, AttributeError) as exc:
        return f"unreadable {STEP_FILE} ({exc})"
    for name, expected in sums.items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if expected is not None and _sha256(path / name) != expected:
            return f"{name} does not match its checksum (truncated or changed)"
    return None


def latest_checkpoint(output_dir: str | os.PathLike) -> Optional[Path]:
    """The newest complete checkpoint of a run whose files verify, or None; newer ones that fail
    verification are skipped with a warning naming them."""
    for path in reversed(_complete_checkpoints(Path(output_dir) / "checkpoints")):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        warnings.warn(f"skipping checkpoint {path}: {problem}", stacklevel=2)
    return None


def checkpoint_record(path: Path) -> dict:
    """``step.json`` of a checkpoint: the position, the layout it was written with, the checksums."""
    return json.loads((path / STEP_FILE).read_text())


def load_checkpoint(path: Path, model, optimizer, scheduler, process_index: int = 0, seed: int = 0) -> Position:
    """Load the weights, optimiser and scheduler, and this process's RNG state: the one saved for
    ``process_index``, or (a process the writing run did not have) a seed from :func:`process_seed`."""
    from safetensors.torch import load_file

    weights = load_file(path / "trainable.safetensors")
    expected = set(_trainable_state(model))
    if set(weights) != expected:
        raise ValueError(f"{path}: checkpoint weights do not match the model's trainable parameters "
                         f"(missing {sorted(expected - set(weights))[:3]}, extra {sorted(set(weights) - expected)[:3]})")
    model.load_state_dict(weights, strict=False)
    state = torch.load(path / "state.pt", weights_only=False)  # our own file: holds numpy RNG state
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    record = checkpoint_record(path)
    position = Position(**{f.name: record[f.name] for f in fields(Position)})
    states = state.get("rng_per_process") or [state["rng"]]
    if process_index < len(states):
        _set_rng_state(states[process_index])
    else:
        torch.manual_seed(process_seed(seed, process_index, position.step))
    return position
