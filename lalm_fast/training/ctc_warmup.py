"""Projector warm-up before LM training: CTC of the projected audio tokens onto the LM's own
vocabulary (:class:`~lalm_fast.training.config.AlignSpec`), with no LM forward pass."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lalm_fast.data.files import atomic_directory
from lalm_fast.training.config import TrainConfig
from lalm_fast.training.dataset import Dataset, epoch_batches, normalize_target

__all__ = ["CTC_WARMUP", "CTCHead", "ctc_warmup"]

CTC_WARMUP = "ctc_warmup"       # <output_dir>/ctc_warmup/: the warmed-up projector + warmup.json


class CTCHead(torch.nn.Module):
    """Vocabulary logits of projected audio tokens: ``scale * h @ E[vocab]^T``, blank (index 0) from a
    learned vector. ``E`` is the LM's frozen input-embedding matrix (a buffer, never trained)."""

    def __init__(self, embeddings: torch.Tensor, vocab: torch.Tensor, cosine: bool = True, init_scale: float = 1.0):
        super().__init__()
        rows = embeddings.detach().float()[vocab]
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("vocab", vocab, persistent=False)
        self.cosine, self.norm = cosine, float(rows.norm(dim=-1).mean())  # mean embedding norm
        # Initial logits of about init_scale * norm * cos (cosine), or unit spread (dot product); learned.
        start = init_scale / self.norm if cosine else 1.0 / self.norm
        self.log_scale = torch.nn.Parameter(torch.tensor(float(torch.tensor(start).log())))
        self.blank = torch.nn.Parameter(torch.zeros(rows.shape[1]))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        table = torch.cat([self.blank[None], self.rows])
        hidden = hidden.float()
        if self.cosine:  # the direction picks the token; the norm is held by norm_penalty instead
            hidden = hidden / hidden.norm(dim=-1, keepdim=True).clamp(min=1e-6) * self.norm
        return self.log_scale.exp() * hidden @ table.T   # [B, T, 1 + V]

    def norm_penalty(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean squared relative deviation of the valid audio tokens' norms from the embeddings' mean norm."""
        valid = torch.arange(hidden.shape[1], device=hidden.device)[None] < lengths.to(hidden.device)[:, None]
        return ((hidden.float().norm(dim=-1)[valid] / self.norm - 1) ** 2).mean()


def _ctc_vocab(core, texts: list[str], full: bool) -> tuple[torch.Tensor, dict[int, int]]:
    size = core.lm.get_input_embeddings().weight.shape[0]
    if full:
        ids = list(range(size))
    else:
        ids = sorted({i for text in texts for i in core.target_ids(text)[:-1]})
    return torch.tensor(ids, dtype=torch.long), {token: n + 1 for n, token in enumerate(ids)}  # 0 = blank


def ctc_warmup(core, dataset: Dataset, config: TrainConfig, output_dir: Path, progress: bool = True) -> dict:
    """Align the projector before LM training (:class:`AlignSpec`); resumable: a finished warm-up in
    ``<output_dir>/ctc_warmup`` is loaded instead of rerun. Returns a summary (losses, seconds, ...)."""
    spec = config.align
    if spec.vocab not in ("train", "full"):
        raise ValueError(f"align.vocab must be 'train' or 'full', got {spec.vocab!r}")
    folder = output_dir / CTC_WARMUP
    saved = _saved_warmup(core, folder, asdict(spec))
    if saved is not None:
        return saved
    # No warm-up yet, or the align settings changed since the saved one: run it (the folder is replaced).
    started = time.perf_counter()
    warmup = _Warmup(core, dataset, config)
    losses = warmup.run(progress)
    summary = {"steps": len(losses), "seconds": round(time.perf_counter() - started, 2), "vocab": len(warmup.vocab),
               "settings": asdict(spec), "infeasible_fraction": warmup.infeasible / max(warmup.seen, 1),
               "loss_first": losses[0], "loss_last": float(np.mean(losses[-10:])),
               "losses": [round(x, 4) for x in losses]}
    _save_warmup(core, folder, summary)
    return summary


def _saved_warmup(core, folder: Path, settings: dict) -> Optional[dict]:
    """The summary of a finished warm-up with these settings, its projector loaded into ``core``; else None."""
    from safetensors.torch import load_file

    if not (folder / "warmup.json").exists():
        return None
    saved = json.loads((folder / "warmup.json").read_text())
    if saved.get("settings") != settings:
        return None
    core.projector.load_state_dict(load_file(folder / "projector.safetensors"))
    return saved


def _save_warmup(core, folder: Path, summary: dict) -> None:
    from safetensors.torch import save_file

    with atomic_directory(folder, replace_existing=True) as staging:  # settings changed: a new warm-up
        save_file({k: v.detach().contiguous().cpu() for k, v in core.projector.state_dict().items()},
                  staging / "projector.safetensors")
        (staging / "warmup.json").write_text(json.dumps(summary))


class _Warmup:
    """One warm-up run: the CTC head, its optimiser and schedule, and the feasibility counts."""

    def __init__(self, core, dataset: Dataset, config: TrainConfig):
        spec = config.align
        self.core, self.dataset, self.config, self.spec = core, dataset, config, spec
        texts = [normalize_target(u.text) if dataset.normalize else u.text for u in dataset.utterances]
        self.vocab, self.index = _ctc_vocab(core, texts, spec.vocab == "full")
        self.device = core.projector[0].weight.device
        self.head = CTCHead(core.lm.get_input_embeddings().weight.to(self.device), self.vocab.to(self.device),
                            spec.match_norm, spec.init_scale).to(self.device)
        self.params = list(core.projector.parameters()) + list(self.head.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=spec.lr, weight_decay=0.0)
        warm = max(1, spec.ctc_steps // 20)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warm) * max(0.05, 1 - step / spec.ctc_steps))
        self.infeasible, self.seen = 0, 0

    def run(self, progress: bool) -> list[float]:
        """``align.ctc_steps`` optimizer steps (with the warm-up compressor, if any); the losses."""
        from tqdm.auto import tqdm

        from lalm_fast.nn import build_compressor

        core, spec = self.core, self.spec
        saved_compressor = core.compressor
        if spec.compressor is not None:
            core.compressor = build_compressor(spec.compressor)
        losses = []
        bar = tqdm(total=spec.ctc_steps, desc="ctc warm-up", disable=not progress)
        rng_state = torch.get_rng_state()
        try:
            core.projector.train()
            for batch in self._batches():
                losses.append(self._step(batch))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        finally:
            bar.close()
            core.compressor = saved_compressor
            torch.set_rng_state(rng_state)  # the LM phase starts from the same RNG with or without a warm-up
            # ... and without the last CTC gradient on the projector, as after loading a saved warm-up (else the
            # first LM step would add it in, and in several processes only the one that ran the warm-up would)
            self.optimizer.zero_grad(set_to_none=True)
        return losses

    def _batches(self):
        """``align.ctc_steps`` loadable batches, epoch after epoch in the seeded order."""
        config = self.config
        data_spec = replace(config.data, batch_size=self.spec.batch_size or config.data.batch_size)
        epoch, batches, taken = 0, [], 0
        while taken < self.spec.ctc_steps:
            if not batches:
                batches = epoch_batches(self.dataset.durations, data_spec, config.run.seed + 7919, epoch)
                epoch += 1
            batch = self.dataset.load(batches.pop(0))
            if batch is not None:
                taken += 1
                yield batch

    def _step(self, batch) -> float:
        loss = self._loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def _loss(self, batch) -> torch.Tensor:
        """CTC of the batch's projected audio tokens onto its transcripts (the speech, whatever the task)."""
        core, dataset = self.core, self.dataset
        audio, lengths, _, _ = batch
        targets = [normalize_target(t) if dataset.normalize else t for t in batch.texts]
        compressed = core.compress_states(audio, lengths) if dataset.cached else core.encode_audio(audio, lengths)
        hidden = core.projector(compressed.values.to(core.projector[0].weight.dtype))
        log_probs = self.head(hidden).log_softmax(-1).transpose(0, 1)          # [T, B, C]
        target_ids = [[self.index[i] for i in core.target_ids(t)[:-1] if i in self.index] for t in targets]
        target_lengths = torch.tensor([len(t) for t in target_ids], dtype=torch.long)
        flat = torch.tensor([i for t in target_ids for i in t], dtype=torch.long, device=self.device)
        input_lengths = compressed.lengths.to("cpu", torch.long)
        self.infeasible += int((input_lengths < target_lengths).sum())
        self.seen += len(targets)
        loss = torch.nn.functional.ctc_loss(log_probs, flat, input_lengths, target_lengths, blank=0,
                                            reduction="mean", zero_infinity=True)
        if self.spec.match_norm:
            loss = loss + self.head.norm_penalty(hidden, compressed.lengths)
        return loss
