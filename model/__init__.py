"""Pure NumPy: the book's layers, the flat parameter buffer, networks and optimizers."""

from .network import Network
from .networks import build
from .params import ParamBuffer

__all__ = ["build", "Network", "ParamBuffer"]
