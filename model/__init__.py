"""Pure NumPy: the book's layers, the flat parameter buffer, networks and optimizers."""

from .checkpoint import load
from .network import Network
from .networks import build
from .params import ParamBuffer
from .threads import limit_threads

__all__ = ["build", "load", "limit_threads", "Network", "ParamBuffer"]
