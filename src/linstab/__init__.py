"""linstab: stability analysis of pre-trained residual networks by linearization.

Quick start::

    import linstab
    net = linstab.load_model("resnet56-akamaster")
    images, labels = linstab.default_images()
    lin = net.linearize(images[0])
    J = lin.unit(1, 5)
"""

from .data import default_images, load_images
from .network import Linearization, Network, UnitInfo, list_models, load_model, parse_unit
from .operators import ComposedOperator, DenseOperator, LinearOperator

__version__ = "0.1.0"

__all__ = [
    "load_model",
    "list_models",
    "default_images",
    "load_images",
    "Network",
    "Linearization",
    "UnitInfo",
    "LinearOperator",
    "ComposedOperator",
    "DenseOperator",
    "parse_unit",
    "__version__",
]
