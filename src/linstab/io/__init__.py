"""Input/output helpers at the bottom of the stack: the result cache, CSV tables, JSON conversion.

Nothing here imports another linstab module.
"""

from .cache import ResultCache, cache_root, default_cache_dir, tensor_hash
from .jsonable import dtype_name, dumps, is_plain_json, to_jsonable

__all__ = [
    "ResultCache",
    "cache_root",
    "default_cache_dir",
    "dtype_name",
    "dumps",
    "is_plain_json",
    "tensor_hash",
    "to_jsonable",
]
