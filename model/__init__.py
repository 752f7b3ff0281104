"""Pure NumPy: the book's layers, the flat parameter buffer, networks and optimizers.

build(spec) is the main entry; MultiLayerNetExtend, SimpleConvNet and DeepConvNet are the
book's networks by their class names, "vgg", "googlenet" and "resnet" chapter 8's tour
(chapter8.py, with the blocks of blocks.py); MODEL_NAMES lists the spec names build() knows.
"""

from .builders import (
    DeepConvNet,
    MultiLayerNetExtend,
    SimpleConvNet,
    build,
    fuse_convolutions,
    input_layout,
)
from .checkpoint import load
from .network import Network
from .params import ParamBuffer
from .spec import MODEL_NAMES
from .threads import limit_threads

__all__ = [
    "build",
    "load",
    "limit_threads",
    "fuse_convolutions",
    "input_layout",
    "DeepConvNet",
    "MultiLayerNetExtend",
    "Network",
    "ParamBuffer",
    "SimpleConvNet",
    "MODEL_NAMES",
]
