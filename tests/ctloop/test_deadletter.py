"""DeadLetters: each bad message copied to the dead-letter topic exactly once, whatever a crash redelivers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from ctloop.bus import Message
from ctloop.crashpoints import ENV
from ctloop.deadletter import DeadLetters, origin_of, reason_of
from ctloop.embedded_bus import EmbeddedBus

DEAD = "dead"


def _bad(bus: EmbeddedBus, n: int) -> list[Message]:
    for i in range(n):
        bus.publish("data", f"garbage {i}".encode())
    reader = bus.consumer(["data"], "reader")
    try:
        return reader.poll(timeout_s=1)
    finally:
        reader.close()


def _copies(bus: EmbeddedBus) -> dict[tuple[str, int, int] | None, int]:
    out: dict[tuple[str, int, int] | None, int] = {}
    for m in bus.read_all(DEAD):
        out[origin_of(m)] = out.get(origin_of(m), 0) + 1
    return out


def test_a_redelivered_bad_message_is_not_copied_again(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.db")
    bad = _bad(bus, 3)
    letters = DeadLetters(bus, DEAD, tmp_path / "state.db")
    assert [letters.send(m, "not JSON") for m in bad] == [True, True, True]
    letters.close()
    again = DeadLetters(bus, DEAD, tmp_path / "state.db")  # a restarted consumer gets the batch again
    assert again.recover() == 0
    assert [again.send(m, "not JSON") for m in bad] == [False, False, False]
    assert _copies(bus) == {("data", 0, m.offset): 1 for m in bad}
    assert {reason_of(m) for m in bus.read_all(DEAD)} == {"not JSON"}


def test_a_crash_after_publishing_before_marking_leaves_one_copy(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.db")
    bad = _bad(bus, 2)
    program = (f"from ctloop.embedded_bus import EmbeddedBus\nfrom ctloop.deadletter import DeadLetters\n"
               f"bus = EmbeddedBus({str(tmp_path / 'bus.db')!r})\n"
               f"reader = bus.consumer(['data'], 'reader')\nletters = DeadLetters(bus, {DEAD!r}, "
               f"{str(tmp_path / 'state.db')!r})\nfor m in reader.poll(timeout_s=1):\n    letters.send(m, 'bad')\n")
    env = {**os.environ, ENV: "dead-letter-published@2"}
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    letters = DeadLetters(bus, DEAD, tmp_path / "state.db")
    assert letters.pending() == 1  # the second copy is on the topic, its record not yet marked
    assert letters.recover() == 0 and letters.pending() == 0
    assert [letters.send(m, "bad") for m in bad] == [False, False]
    assert _copies(bus) == {("data", 0, m.offset): 1 for m in bad}


def test_a_crash_after_recording_before_publishing_copies_on_redelivery(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.db")
    (bad,) = _bad(bus, 1)
    letters = DeadLetters(bus, DEAD, tmp_path / "state.db")
    # What a crash between the record and the publish leaves behind: a pending record, nothing on the topic.
    assert letters.record.claim(("data", 0, bad.offset), "bad")
    assert letters.recover() == 1 and letters.pending() == 0
    assert letters.send(bad, "bad") is True
    assert letters.send(bad, "bad") is False
    assert _copies(bus) == {("data", 0, bad.offset): 1}
