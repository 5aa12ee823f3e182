"""Checksums of files."""

from __future__ import annotations

import hashlib
import os


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks (``algorithm``: a hashlib name)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file."""
    return file_digest(path, "sha256")


def sha1_file(path: str | os.PathLike) -> str:
    """SHA-1 hex digest of a file (pytorchcv publishes SHA-1 of its weight files)."""
    return file_digest(path, "sha1")
