"""Checks of user settings (training config keys, command-line options), in one place.

A rule takes a value and returns None when it is fine, else what is wrong ("must be an integer
>= 1, got 0"). :func:`check` applies a table of rules and raises one :class:`SettingError` whose
single line names the file and the key, so ``lalm-fast`` prints it instead of a traceback.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Optional

Rule = Callable[[Any], Optional[str]]


class SettingError(ValueError):
    """One bad setting: ``<where>: <key> <what is wrong>``."""

    def __init__(self, where: str, key: str, problem: str):
        self.where, self.key = where, key
        super().__init__(f"{where}: {key} {problem}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(low: int) -> Rule:
    def rule(value):
        if not _is_int(value):
            return f"must be an integer >= {low}, got {value!r}"
        return None if value >= low else f"must be >= {low}, got {value}"
    return rule


def number(low: float, inclusive: bool = False) -> Rule:
    """A finite int or float above ``low`` (or at it, if ``inclusive``)."""
    bound = f"{'>=' if inclusive else '>'} {low:g}"

    def rule(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"must be a finite number {bound}, got {value!r}"
        return None if (value >= low if inclusive else value > low) else f"must be {bound}, got {value!r}"
    return rule


def of_type(kind: type, name: str) -> Rule:
    def rule(value):
        return None if isinstance(value, kind) and not (kind is int and isinstance(value, bool)) else \
            f"must be {name}, got {value!r}"
    return rule


def choice(*options) -> Rule:
    def rule(value):
        return None if isinstance(value, str) and value in options else f"must be one of {list(options)}, got {value!r}"
    return rule


def text(value) -> Optional[str]:
    return None if isinstance(value, str) and value.strip() else f"must be a non-empty string, got {value!r}"


def optional(inner: Rule) -> Rule:
    def rule(value):
        return None if value is None else inner(value)
    return rule


def existing_file(value) -> Optional[str]:
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        return f"must be a file path, got {value!r}"
    if os.path.isdir(value):
        return f"must be a file, but {str(value)!r} is a folder"
    return None if os.path.isfile(value) else f"names a file that does not exist: {str(value)!r}"


def check(values: dict, rules: dict[str, Rule], where: str, prefix: str = "") -> None:
    """Apply ``rules`` to the keys of ``values`` that have one; raise the first problem found."""
    for key, rule in rules.items():
        if key in values:
            problem = rule(values[key])
            if problem:
                raise SettingError(where, f"{prefix}{key}", problem)
