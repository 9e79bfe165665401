"""Deprecated alias: training is :mod:`lalm_fast.training`, model evaluation :mod:`lalm_fast.evaluate.model`.

``from lalm_fast.train import X`` keeps working for the names this module held, with a
DeprecationWarning on import.
"""

import warnings

from lalm_fast.evaluate.model import decode_metrics, evaluate_model, evaluate_to_files
from lalm_fast.training import *  # noqa: F401,F403
from lalm_fast.training import __all__ as _training_names

warnings.warn("lalm_fast.train is deprecated: import from lalm_fast.training (training) and lalm_fast.evaluate "
              "(evaluate_model, decode_metrics, evaluate_to_files)", DeprecationWarning, stacklevel=2)

__all__ = [*_training_names, "decode_metrics", "evaluate_model", "evaluate_to_files"]
