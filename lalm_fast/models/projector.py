"""The projector: maps compressed audio tokens from the encoder's width to the LM's width."""

from __future__ import annotations

from typing import Any, Sequence, Union

from torch import nn

__all__ = ["MLPProjector", "ACTIVATIONS"]

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


class MLPProjector(nn.Sequential):
    """``Linear -> act -> ... -> Linear`` from ``in_dim`` to ``out_dim``.

    ``hidden`` is one width for every hidden layer (``layers - 1`` of them, ``out_dim`` when
    omitted) or an explicit list of widths, which then fixes the depth. ``layers=1`` is a plain
    linear projection.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Union[int, Sequence[int], None] = None, layers: int = 2,
                 activation: str = "gelu"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown projector activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        widths = _hidden_widths(hidden, layers, out_dim)
        dims = [in_dim, *widths, out_dim]
        modules: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            if index:
                modules.append(ACTIVATIONS[activation]())
            modules.append(nn.Linear(fan_in, fan_out))
        super().__init__(*modules)
        self.in_dim, self.out_dim, self.hidden, self.activation = in_dim, out_dim, widths, activation

    def config(self) -> dict[str, Any]:
        """Plain dict; ``MLPProjector(**projector.config())`` rebuilds the same shape."""
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "hidden": list(self.hidden),
                "layers": len(self.hidden) + 1, "activation": self.activation}


def _hidden_widths(hidden: Union[int, Sequence[int], None], layers: int, out_dim: int) -> list[int]:
    if hidden is not None and not isinstance(hidden, int):
        return [int(width) for width in hidden]
    if layers < 1:
        raise ValueError(f"projector layers must be >= 1, got {layers}")
    return [out_dim if hidden is None else hidden] * (layers - 1)
