"""LGL Kit helpers: self-supervised speaker recognition with loss-gated learning.

Sub-modules are imported explicitly (``from lgl_helpers.core import models``) so that importing the
package stays cheap and free of side effects; ``from lgl_helpers import Encoder`` (reuse a trained
encoder, :mod:`lgl_helpers.core.encoder`) imports its module on first use.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from lgl_helpers import Encoder` imports torch only when it is asked for.
    if name == "Encoder":
        from lgl_helpers.core.encoder import Encoder

        return Encoder
    raise AttributeError(f"module 'lgl_helpers' has no attribute {name!r}")
