"""Prompt templates: one text per task, with a placeholder where the audio tokens go.

A task is a name (``"transcribe"``) or a dict naming it with the template's fields
(``{"task": "translate", "lang": "German"}`` fills ``{lang}``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

__all__ = ["AUDIO_PLACEHOLDER", "DEFAULT_PROMPTS", "Task", "render_prompt", "split_prompt", "check_templates",
           "as_list"]

AUDIO_PLACEHOLDER = "<audio>"
DEFAULT_PROMPTS = {
    "transcribe": "<audio> Transcribe the audio.",
    "translate": "<audio> Translate the audio to {lang}.",
}

Task = Union[str, Mapping[str, Any]]


def check_templates(templates: Mapping[str, str], placeholder: str) -> None:
    for name, template in templates.items():
        split_prompt(template, placeholder, what=f"prompt template {name!r}")


def render_prompt(templates: Mapping[str, str], task: Task) -> str:
    """The prompt text of ``task`` (placeholder still in it)."""
    fields = {"task": task} if isinstance(task, str) else dict(task)
    name = fields.pop("task", None)
    if name not in templates:
        raise ValueError(f"unknown task {name!r}; the prompt templates define {sorted(templates)}")
    try:
        return templates[name].format(**fields)
    except KeyError as missing:
        raise ValueError(f"task {name!r} needs the field {missing}: "
                         f"pass {{'task': {name!r}, {missing}: ...}}") from None


def split_prompt(text: str, placeholder: str, what: str = "prompt") -> tuple[str, str]:
    """``(prefix, suffix)`` around the single audio placeholder."""
    count = text.count(placeholder)
    if count != 1:
        raise ValueError(f"{what} must contain the audio placeholder {placeholder!r} exactly once, "
                         f"found {count} in {text!r}")
    prefix, _, suffix = text.partition(placeholder)
    return prefix, suffix


def as_list(value: Union[Any, Sequence[Any], None], size: int, name: str) -> list:
    """One value per sample: a single value is repeated, a list must have ``size`` entries."""
    if value is None or isinstance(value, (str, Mapping)):
        return [value] * size
    values = list(value)
    if len(values) != size:
        raise ValueError(f"{name} must have one entry per sample ({size}), got {len(values)}")
    return values
