"""The ``linstab`` command line: every argparse parser and command lives in this package."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
