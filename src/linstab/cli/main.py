"""The ``linstab`` entry point: the parser assembled from the command modules."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

from .._version import __version__
from . import models, perturbations, report, spectra, sweep, train

# modules contributing subcommands: each defines add_parser(subparsers) and may define
# add_figure_parser(figure_subparsers) for kinds of `linstab figure KIND`
COMMAND_MODULES = (models, train, perturbations, spectra, report, sweep)


class _ExactParser(argparse.ArgumentParser):
    """An argument parser that takes options only as spelled in full (no abbreviations), as do
    the subcommand parsers made from it: ``--attacks`` must not silently mean ``--attacks-json``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The ``linstab`` parser with the subcommands of every command module."""
    parser = _ExactParser(
        prog="linstab",
        description="Stability analysis of pre-trained residual networks by linearization.",
    )

    parser.add_argument("--version", action="version", version=f"linstab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fig = sub.add_parser("figure", help="draw one of the paper's figures (PNG and SVG)")
    figsub = fig.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    for mod in COMMAND_MODULES:
        mod.add_parser(sub)
        if hasattr(mod, "add_figure_parser"):
            mod.add_figure_parser(figsub)
    return parser


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM (``kill PID``) ends the command through ``SystemExit(143)`` instead of at once, so
    that its cleanup runs (a report's unfinished staging folder is removed, files being written
    are left whole). Only in the main thread; the previous handler is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``linstab`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = ["linstab", *(sys.argv[1:] if argv is None else argv)]  # recorded by long jobs
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # `linstab train` saves its checkpoint on SIGTERM itself (linstab.training.stop)
    guard = contextlib.nullcontext() if args.command == "train" else _sigterm_exits()
    try:
        with guard:
            return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback (report and sweep say what is kept)
        print(f"linstab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `linstab ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, OSError) as exc:  # OSError: a file that cannot be read or written
        print(f"linstab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m linstab.cli.main
    sys.exit(main())
