"""Instance-level ``forward`` patches that revert exactly (shared by the native-model integrations)."""

from __future__ import annotations

import inspect
import types
from typing import Callable

from torch import nn


class ForwardPatch:
    """Binds ``fn`` as ``module``'s own ``forward``; :meth:`restore` puts back what was there.

    Only the instance changes, never the class, so other models of the same class are
    unaffected. A ``forward`` the instance already had of its own (another patch, a wrapper)
    is kept and called as :attr:`original`.
    """

    def __init__(self, module: nn.Module, fn: Callable):
        self.module = module
        self.had_instance_forward = "forward" in module.__dict__
        self.instance_forward = module.__dict__.get("forward")
        patched = types.MethodType(fn, module)

        def forward(*args, **kwargs):
            return patched(*args, **kwargs)

        # the original's parameters, for callers that inspect them: generate() checks its model_kwargs against
        # them when the patched module is the top-level model (nemotron_h_omni)
        forward.__signature__ = inspect.signature(self.original)
        forward.__doc__ = getattr(self.original, "__doc__", None)
        module.forward = forward

    @property
    def original(self) -> Callable:
        """The forward that was in place before the patch, bound to the module."""
        if self.had_instance_forward:
            return self.instance_forward
        return type(self.module).forward.__get__(self.module)

    def restore(self) -> None:
        if self.had_instance_forward:
            self.module.forward = self.instance_forward
        else:
            del self.module.forward


PATCH_ATTR = "_lalm_fast_compression"


def patch_of(module: nn.Module):
    """The integration's patch record stored on ``module`` (a plain attribute, not a submodule,
    so ``state_dict`` and saved adapters are unchanged), or None."""
    return module.__dict__.get(PATCH_ATTR)


def find_module(model: nn.Module, cls: type) -> nn.Module:
    """The first ``cls`` inside ``model`` (itself, a ForConditionalGeneration, or a PeftModel)."""
    for module in model.modules():
        if isinstance(module, cls):
            return module
    raise TypeError(f"{type(model).__name__} holds no transformers {cls.__name__}")


def applied_patch(module: nn.Module, message: str = "model has no compression applied"):
    """:func:`patch_of` ``module``, raising a ValueError with ``message`` when it is not patched."""
    patch = patch_of(module)
    if patch is None:
        raise ValueError(message)
    return patch
