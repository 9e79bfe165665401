"""Drop-in compression layers for any audio encoder's output.

Every layer shares one interface::

    out = layer(x, lengths=None, attention_mask=None)   # x [B, T, D] -> CompressedAudio
    out.values [B, S, D], out.lengths [B], out.spans [B, S, 2], out.mask()

plus ``output_lengths(lengths)`` where the count does not depend on content, ``config()``
(a plain dict) and :func:`build_compressor` to make a layer from a string or that dict::

    build_compressor("uniform:3")            # UniformPool(3)
    build_compressor("downsample:2")         # Downsample(2)
    build_compressor("segment:rate=3")       # SegmentPool(rate=3)
    build_compressor("segment:prominence=0.05,min_len=2")
    build_compressor("none")                 # Identity: frames pass through unchanged

The layers hold no parameters; they only need torch.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import torch
from torch import nn

from lalm_fast import ops
from lalm_fast.ops import CompressedAudio
from lalm_fast.ops.arguments import check_detection_args, check_positive_int

__all__ = ["AudioCompressor", "Identity", "UniformPool", "Downsample", "SegmentPool", "build_compressor",
           "CompressedAudio"]


class AudioCompressor(nn.Module):
    """Base class: maps encoder frames ``[B, T, D]`` to fewer tokens ``[B, S, D]``."""

    kind: str = ""
    #: True when the output length depends only on the input length (not on content).
    static_length: bool = True

    def __init__(self, backend: Optional[str] = None):
        super().__init__()
        self.backend = backend

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None) -> CompressedAudio:
        raise NotImplementedError

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Tokens per sample for inputs of ``lengths`` frames (static compressors only)."""
        raise TypeError(f"{type(self).__name__} is content-adaptive: its output length is only known "
                        "after it runs (use forward(...).lengths)")

    def options(self) -> dict[str, Any]:
        return {}

    def config(self) -> dict[str, Any]:
        """Plain-dict config; ``build_compressor(layer.config())`` rebuilds the layer."""
        return {"kind": self.kind, **self.options()}

    def extra_repr(self) -> str:
        parts = [f"{key}={value!r}" for key, value in self.options().items()]
        if self.backend is not None:
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


def _check_lengths(lengths) -> torch.Tensor:
    if not isinstance(lengths, torch.Tensor) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got {getattr(lengths, 'dtype', type(lengths).__name__)}")
    if lengths.numel() and lengths.device.type == "cpu" and int(lengths.min()) < 0:
        raise ValueError(f"lengths must be >= 0, got {lengths.tolist()}")
    return lengths


def _ceil_div(lengths: torch.Tensor, k: int) -> torch.Tensor:
    # k past the int64 range (k is a Python int) gives one token per non-empty sample.
    return (_check_lengths(lengths) + (k - 1)) // k if k < 2**62 else (lengths > 0).to(lengths.dtype)


class Identity(AudioCompressor):
    """No compression: every frame is a token (the frame-level baseline)."""

    kind = "none"

    def forward(self, x, lengths=None, attention_mask=None) -> CompressedAudio:
        return ops.uniform_pool(x, lengths, 1, attention_mask=attention_mask, backend=self.backend)

    def output_lengths(self, lengths):
        return _check_lengths(lengths).clone()


class _EveryK(AudioCompressor):
    def __init__(self, k: int, backend: Optional[str] = None):
        super().__init__(backend)
        self.k = check_positive_int(k, "k")

    def options(self):
        return {"k": self.k}

    def output_lengths(self, lengths):
        return _ceil_div(lengths, self.k)


class UniformPool(_EveryK):
    """Length-aware average pooling of every ``k`` frames (padding is never averaged in)."""

    kind = "uniform"

    def forward(self, x, lengths=None, attention_mask=None) -> CompressedAudio:
        return ops.uniform_pool(x, lengths, self.k, attention_mask=attention_mask, backend=self.backend)


class Downsample(_EveryK):
    """Keep every ``k``-th frame."""

    kind = "downsample"

    def forward(self, x, lengths=None, attention_mask=None) -> CompressedAudio:
        return ops.downsample(x, lengths, self.k, attention_mask=attention_mask, backend=self.backend)


class SegmentPool(AudioCompressor):
    """Unsupervised segmentation, then the mean of each segment.

    ``rate=r``: exactly ``ceil(L / r)`` tokens (static length, comparable with UniformPool(r));
    ``prominence=p`` (default 0.05): peaks of the normalised adjacent-frame dissimilarity;
    ``threshold=t``: wherever the raw dissimilarity exceeds t. ``min_len`` / ``max_len`` bound
    the segment lengths (see :func:`lalm_fast.ops.detect_boundaries`).
    """

    kind = "segment"

    def __init__(self, rate: Optional[float] = None, prominence: Optional[float] = None,
                 threshold: Optional[float] = None, min_len: int = 1, max_len: Optional[int] = None,
                 backend: Optional[str] = None):
        super().__init__(backend)
        check_detection_args(prominence, rate, threshold, min_len, max_len)
        self.rate, self.prominence, self.threshold = rate, prominence, threshold
        self.min_len, self.max_len = min_len, max_len
        self.static_length = rate is not None

    def options(self):
        names = ("rate", "prominence", "threshold", "min_len", "max_len")
        chosen = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if chosen.get("min_len") == 1:
            del chosen["min_len"]
        return chosen

    def output_lengths(self, lengths):
        if self.rate is None:
            return super().output_lengths(lengths)
        return torch.ceil(_check_lengths(lengths).to(torch.float64) / self.rate).long()

    def forward(self, x, lengths=None, attention_mask=None) -> CompressedAudio:
        return ops.segment_compress(x, lengths, attention_mask=attention_mask, backend=self.backend,
                                    **{k: v for k, v in self.options().items()})


_KINDS = {cls.kind: cls for cls in (Identity, UniformPool, Downsample, SegmentPool)}


def _parse_value(text: str) -> Union[int, float, None]:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if math.isnan(value):
            raise ValueError("NaN is not a valid option value")
        return value


def _parse_spec(spec: str) -> dict[str, Any]:
    kind, _, rest = spec.strip().partition(":")
    config: dict[str, Any] = {"kind": kind.strip()}
    if not rest.strip():
        return config
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if not eq:  # "uniform:3" is short for "uniform:k=3"
            if config["kind"] == "none":
                raise ValueError(f"compressor {config['kind']!r} takes no options, got {spec!r}")
            key, value = ("k" if config["kind"] in ("uniform", "downsample") else "rate"), key
        try:
            config[key.strip()] = _parse_value(value.strip())
        except ValueError:
            raise ValueError(f"cannot read {item.strip()!r} in compressor spec {spec!r}: values must be numbers") from None
    return config


def build_compressor(spec: Union[str, dict, AudioCompressor, None]) -> AudioCompressor:
    """A compression layer from ``"none"``, ``"uniform:3"``, ``"downsample:2"``,
    ``"segment:rate=3"``, ``"segment:prominence=0.05,min_len=2"``, a config dict, or a layer."""
    if isinstance(spec, AudioCompressor):
        return spec
    if spec is None:
        return Identity()
    if isinstance(spec, str):
        config = _parse_spec(spec)
    elif isinstance(spec, dict):
        config = dict(spec)
    else:
        raise TypeError(f"compressor spec must be a string, dict or AudioCompressor, got {type(spec).__name__}")
    kind = config.pop("kind", None)
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ValueError(f"unknown compressor kind {kind!r}; expected one of {sorted(_KINDS)}")
    if kind == "none" and config:
        raise ValueError(f"compressor 'none' takes no options, got {sorted(config)}")
    try:
        return _KINDS[kind](**config)
    except TypeError as exc:
        raise ValueError(f"bad options for compressor {kind!r}: {exc}") from None
