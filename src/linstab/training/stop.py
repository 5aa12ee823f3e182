"""A graceful stop of a long run on SIGTERM or SIGINT: the run saves where it is, then ends."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

#: The signals that ask a training run to save and stop (``kill PID``; Ctrl-C).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
    """Context manager that turns the first SIGTERM or SIGINT into a stop request.

    Inside the ``with`` block the first of these signals only sets :attr:`signal_name`; the
    loop checks :attr:`requested` at a point where its state is whole (after a training step),
    saves and returns. The first signal also puts the previous handlers back, so a second one
    acts as it would without this (SIGINT raises ``KeyboardInterrupt``, SIGTERM ends the
    process). On leaving the block the previous handlers are restored. Outside the main thread
    (where Python cannot install handlers) it does nothing and :attr:`requested` stays False.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.signal_name: str | None = None
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signal_name is not None

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by the signal (128 + its number); 0 if none."""
        if self.signal_name is None:
            return 0
        return 128 + int(signal.Signals[self.signal_name])

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():  # None: a handler not set from Python
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
