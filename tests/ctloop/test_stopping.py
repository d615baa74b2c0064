import os
import signal

import pytest

from ctloop.stopping import until_signalled


@pytest.fixture(autouse=True)
def _restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_loop_after_the_step_in_hand_then_closes(signum):
    events = []

    def run(should_stop):
        while not should_stop():
            events.append("step")
            if len(events) == 3:
                os.kill(os.getpid(), signum)
                events.append("step finished")

    until_signalled(run, lambda: events.append("closed"))
    assert events == ["step", "step", "step", "step finished", "closed"]


def test_close_runs_when_the_loop_fails():
    closed = []

    def run(should_stop):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        until_signalled(run, lambda: closed.append(True))
    assert closed == [True]
