"""io"""

from .cache import ResultCache, cache_root, default_cache_dir, tensor_hash
from .jsonable import dtype_name, is_plain_json, to_jsonable

__all__ = [
    "ResultCache",
    "cache_root",
    "default_cache_dir",
    "dtype_name",
    "is_plain_json",
    "tensor_hash",
    "to_jsonable",
]
