"""vidinfer: self-hostable video inference with a Roboflow-compatible API.

Importing the package loads nothing heavy: the client (``vidinfer.Client``) is
usable with only the base install; the engine and server live in optional extras.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
