"""Pure NumPy: the book's layers, the flat parameter buffer, networks and optimizers."""

from .checkpoint import load
from .network import Network
from .networks import build
from .params import ParamBuffer

__all__ = ["build", "load", "Network", "ParamBuffer"]
