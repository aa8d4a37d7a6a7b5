"""LGL Kit helpers: self-supervised speaker recognition with loss-gated learning.

Sub-modules are imported explicitly (``from lgl_helpers.core import models``) so that importing the
package stays cheap and free of side effects.
"""

__version__ = "0.1.0"
