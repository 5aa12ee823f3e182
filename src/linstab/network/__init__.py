"""A residual network seen as a dynamical system: stem, stages of units, head; linearization.

Units are addressed ``stage.unit`` with 1-based numbers, as in the paper (``1.5`` = fifth unit
of the first stage). The *network operator* maps the stem's output (the input of unit 1.1) to
the head's input (the output of the last unit).
"""

from .factories import call_factory, import_factory, is_factory_spec, load_factory
from .linearization import Linearization
from .loading import load_model
from .view import JACOBIAN_METHODS, Network, UnitInfo, parse_unit

__all__ = [
    "JACOBIAN_METHODS",
    "Linearization",
    "Network",
    "UnitInfo",
    "call_factory",
    "import_factory",
    "is_factory_spec",
    "load_factory",
    "load_model",
    "parse_unit",
]
