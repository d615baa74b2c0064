import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from ctloop.embedded_bus import EmbeddedBus


def test_threads_sharing_one_instance_lose_nothing(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.db")

    def publish(worker: int) -> None:
        for i in range(100):
            bus.publish("t", f"{worker}:{i}".encode())

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(publish, range(6)))
    consumer = bus.consumer(["t"], "g")
    values = [m.value for m in consumer.poll(timeout_s=0.1, max_records=1000)]
    assert sorted(values) == sorted(f"{w}:{i}".encode() for w in range(6) for i in range(100))
    assert [m.offset for m in consumer.poll(timeout_s=0.0)] == []
    assert bus.end_offsets("t") == 600


def test_offsets_are_dense_and_ordered_per_topic(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.db")
    for topic in ("a", "b", "a"):
        bus.publish(topic, topic.encode())
    got = bus.consumer(["a", "b"], "g").poll(timeout_s=0.1)
    assert [(m.topic, m.offset) for m in got] == [("a", 0), ("a", 1), ("b", 0)]


def test_publish_many_appends_in_order_with_dense_offsets_after_single_publishes(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.db")
    bus.publish("t", b"first", key="k0")
    bus.publish_many("t", [(b"a", "k1"), (b"b", b"k2"), (b"c", None)])
    bus.publish_many("other", [(b"x", None)])
    bus.publish("t", b"last")
    got = bus.read_all("t")
    assert [(m.offset, m.value, m.key) for m in got] == [
        (0, b"first", b"k0"), (1, b"a", b"k1"), (2, b"b", b"k2"), (3, b"c", None), (4, b"last", None)]
    assert all(m.headers == () for m in got)
    assert bus.end_offsets("other") == 1


def test_publish_many_is_all_or_none(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.db")
    bus.publish("t", b"before")
    with pytest.raises(TypeError):
        bus.publish_many("t", [(b"a", None), (None, None), (b"c", None)])  # type: ignore[list-item]
    bus.publish("t", b"after")
    assert [(m.offset, m.value) for m in bus.read_all("t")] == [(0, b"before"), (1, b"after")]


def test_a_group_survives_a_sigkill_right_after_publish_many_returns(tmp_path):
    path = tmp_path / "bus.db"
    child = (
        "import os, signal, sys\n"
        "from ctloop.embedded_bus import EmbeddedBus\n"
        "bus = EmbeddedBus(sys.argv[1])\n"
        "bus.publish_many('t', [(str(i).encode(), None) for i in range(50)])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(path)], timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert [m.value for m in EmbeddedBus(path).read_all("t")] == [str(i).encode() for i in range(50)]
