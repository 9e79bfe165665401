"""lalm-fast: audio-token compression for large audio language models.

``lalm_fast.ops`` holds the functional ops (needs only torch); ``lalm_fast.nn`` the drop-in
layers. Model parts (transformers, peft) live in their own modules and import lazily.
"""

__version__ = "0.1.0"

from lalm_fast import ops  # noqa: E402,F401
from lalm_fast.ops import CompressedAudio  # noqa: E402,F401


def _bench_from_checkout() -> None:
    """``lalm_fast.bench`` is the top-level bench/ folder (setup.py's package_dir). A source checkout
    used without installing it, or through an editable install made before that mapping existed,
    would not find it: register it from the checkout. An installed package never takes this path."""
    import importlib.util
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    init = os.path.join(root, "bench", "__init__.py")
    if not (os.path.isfile(os.path.join(root, "setup.py")) and os.path.isfile(init)):
        return
    if importlib.util.find_spec(__name__ + ".bench") is not None:
        return
    spec = importlib.util.spec_from_file_location(__name__ + ".bench", init,
                                                  submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    globals()["bench"] = module


_bench_from_checkout()
