"""lalm-fast: audio-token compression for large audio language models.

``lalm_fast.ops`` holds the functional ops (needs only torch); ``lalm_fast.nn`` the drop-in
layers. Model parts (transformers, peft) live in their own modules and import lazily.
"""

__version__ = "0.1.0"

from lalm_fast import ops  # noqa: E402,F401
from lalm_fast.ops import CompressedAudio  # noqa: E402,F401

