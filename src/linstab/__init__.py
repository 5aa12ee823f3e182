"""linstab: stability analysis of pre-trained residual networks by linearization.

Quick start::

    import linstab
    net = linstab.load_model("resnet56-akamaster")
    images, labels = linstab.default_images()
    lin = net.linearize(images[0])
    J = lin.unit(1, 5)
"""

from ._version import __version__
from .data import default_images, load_images
from .models import list_models
from .network import Linearization, Network, UnitInfo, load_model, parse_unit
from .operators import ComposedOperator, DenseOperator, LinearOperator

__all__ = [
    "ComposedOperator",
    "DenseOperator",
    "Linearization",
    "LinearOperator",
    "Network",
    "UnitInfo",
    "__version__",
    "default_images",
    "list_models",
    "load_images",
    "load_model",
    "parse_unit",
]
