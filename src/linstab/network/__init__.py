"""network"""

from .linearization import Linearization
from .view import JACOBIAN_METHODS, Network, UnitInfo, load_model, parse_unit

__all__ = [
    "JACOBIAN_METHODS",
    "Linearization",
    "Network",
    "UnitInfo",
    "load_model",
    "parse_unit",
]
