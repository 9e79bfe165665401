"""Runs of audio placeholder tokens in ``input_ids``: counting, checking, expanding (torch only).

Shared by every native-model integration: the processor writes one run of placeholder tokens
per audio, the model scatters one audio token onto each placeholder, so the run lengths must
equal the compressed token counts, audio by audio, in reading order.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch

IGNORE_INDEX = -100      # label of positions that carry no loss


def placeholder_runs(input_ids: torch.Tensor, token_id: int) -> list[list[int]]:
    """Per sample, the lengths of its runs of consecutive ``token_id`` tokens, in order."""
    runs = []
    for row in (input_ids == token_id).tolist():
        lengths, current = [], 0
        for is_audio in row + [False]:
            if is_audio:
                current += 1
            elif current:
                lengths.append(current)
                current = 0
        runs.append(lengths)
    return runs


def check_placeholder_runs(input_ids: torch.Tensor, token_id: int, counts: list[int], token_name: str,
                           mismatch: Callable[[int, int, int, int], str], rows_hint: str = "") -> None:
    """Raise a ValueError naming the first audio whose run of ``token_id`` is not ``counts[i]`` long.

    ``mismatch(index, sample, placeholders, count)`` writes the message for one audio, so each
    integration can say what to do. This runs before transformers' own check, whose message
    ("Audio features and audio tokens do not match") gives only batch totals.
    """
    runs = placeholder_runs(input_ids, token_id)
    flat_runs = [run for sample in runs for run in sample]
    if len(flat_runs) != len(counts):
        raise ValueError(f"input_ids hold {len(flat_runs)} runs of {token_name} placeholders but the audio encoder "
                         f"returned {len(counts)} audios; every audio needs one run of placeholders "
                         f"(the processor writes them){rows_hint}")
    owners = [sample for sample, sample_runs in enumerate(runs) for _ in sample_runs]
    for index, (placeholders, count) in enumerate(zip(flat_runs, counts)):
        if placeholders != count:
            raise ValueError(mismatch(index, owners[index], placeholders, count))


def padding_side_of(attention_mask: torch.Tensor, default: str) -> str:
    """The side ``attention_mask`` pads on, or ``default`` when no row is padded."""
    if bool((attention_mask[:, 0] == 0).any()):
        return "left"
    if bool((attention_mask[:, -1] == 0).any()):
        return "right"
    return default


def expand_audio_placeholders(input_ids: torch.Tensor, counts, audio_token_id: int, pad_token_id: int,
                              attention_mask: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                              padding_side: Optional[str] = None, token_name: str = "<|AUDIO|>",
                              ) -> dict[str, torch.Tensor]:
    """Rewrite every run of ``audio_token_id`` tokens (one or many) as ``counts[i]`` tokens, audio ``i``
    in reading order, and re-pad the batch on ``padding_side`` (default: the side the
    ``attention_mask`` pads, else left). Labels move with their tokens; audio positions and
    padding get -100. Returns ``input_ids``, ``attention_mask`` and (when given) ``labels``.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    side = padding_side or padding_side_of(attention_mask, "left")
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
    counts = [int(c) for c in (counts.tolist() if torch.is_tensor(counts) else counts)]
    valid_ids = input_ids.masked_fill(attention_mask == 0, -1)
    runs = sum(len(sample) for sample in placeholder_runs(valid_ids, audio_token_id))
    if runs != len(counts):
        raise ValueError(f"input_ids hold {runs} runs of {token_name} placeholders but {len(counts)} audio counts "
                         "were given")
    remaining = iter(counts)
    rows = [_expand_row(ids, mask, None if labels is None else labels[b], remaining, audio_token_id)
            for b, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist()))]
    width = max(len(row[0]) for row in rows)
    out = {"input_ids": _pad_rows([r[0] for r in rows], width, pad_token_id, side),
           "attention_mask": _pad_rows([[1] * len(r[0]) for r in rows], width, 0, side)}
    if labels is not None:
        out["labels"] = _pad_rows([r[1] for r in rows], width, IGNORE_INDEX, side)
    device = input_ids.device
    return {name: torch.tensor(value, dtype=torch.long, device=device) for name, value in out.items()}


def expand_token_types(input_ids: torch.Tensor, types: torch.Tensor, counts, audio_token_id: int,
                       attention_mask: Optional[torch.Tensor], expanded_ids: torch.Tensor,
                       padding_side: Optional[str] = None, name: str = "token types") -> torch.Tensor:
    """``types`` (one type id per token, e.g. ``mm_token_type_ids``) laid out like ``expanded_ids``, the
    :func:`expand_audio_placeholders` output for the same arguments: text keeps its type, every audio
    position gets the audio type (the one the audio placeholders have), padding gets 0."""
    audio = input_ids == audio_token_id
    if attention_mask is not None:
        audio &= attention_mask.bool()
    audio_types = types[audio].unique()
    if audio_types.numel() > 1:
        raise ValueError(f"{name} give the audio placeholders several types {audio_types.tolist()}")
    moved = expand_audio_placeholders(input_ids, counts, audio_token_id, 0, attention_mask, types, padding_side)
    out = moved["labels"].masked_fill(moved["attention_mask"] == 0, 0)
    if audio_types.numel():
        out = out.masked_fill(expanded_ids == audio_token_id, int(audio_types[0]))
    return out.to(types.dtype)


def _expand_row(ids, mask, labels, counts: Iterator[int], audio_token_id):
    """One sample's valid tokens with each placeholder run expanded; takes counts from the ``counts`` iterator."""
    labels = labels.tolist() if labels is not None else [IGNORE_INDEX] * len(ids)
    out_ids, out_labels, previous_audio = [], [], False
    for token, valid, label in zip(ids, mask, labels):
        if not valid:
            continue
        is_audio = token == audio_token_id
        if is_audio and not previous_audio:
            count = next(counts)
            out_ids += [audio_token_id] * count
            out_labels += [IGNORE_INDEX] * count
        elif not is_audio:
            out_ids.append(token)
            out_labels.append(label)
        previous_audio = is_audio
    return out_ids, out_labels


def _pad_rows(rows, width, value, side):
    return [([value] * (width - len(r)) + r) if side == "left" else (r + [value] * (width - len(r))) for r in rows]
