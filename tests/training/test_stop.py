"""Tests of linstab.training.stop: SIGTERM / SIGINT become a stop request, handlers come back."""

from __future__ import annotations

import signal
import threading

import pytest

from linstab.training.stop import StopOnSignal

main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers can only be installed in the main thread",
)


def _deliver(sig: signal.Signals) -> None:
    """Raise ``sig`` in this thread (``raise()``: delivered before it returns, where ``os.kill``
    of the process could land in another thread that a loaded machine runs only later, and the
    handler ran after the test had looked); Python runs its handler before the next bytecodes."""
    signal.raise_signal(sig)
    for _ in range(1000):
        pass


@main_thread_only
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_is_a_request_and_the_second_acts_as_before(sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopOnSignal() as stop:
        assert not stop.requested and stop.exit_status == 0
        _deliver(sig)
        assert stop.requested and stop.signal_name == sig.name
        assert stop.exit_status == 128 + int(sig)
        # the first signal put the previous handlers back: a second one is not swallowed
        assert {s: signal.getsignal(s) for s in before} == before
        if sig == signal.SIGINT:
            with pytest.raises(KeyboardInterrupt):
                _deliver(sig)
    assert {s: signal.getsignal(s) for s in before} == before


@main_thread_only
def test_handlers_are_restored_without_a_signal_and_on_an_error():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError), StopOnSignal() as stop:
        assert signal.getsignal(signal.SIGTERM) != before
        raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGTERM) == before and not stop.requested


def test_outside_the_main_thread_it_installs_nothing():
    before = signal.getsignal(signal.SIGTERM)
    seen = {}

    def work():
        with StopOnSignal() as stop:
            seen["handler"] = signal.getsignal(signal.SIGTERM)
            seen["requested"] = stop.requested

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == {"handler": before, "requested": False}
