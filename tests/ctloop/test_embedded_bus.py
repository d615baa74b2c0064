from concurrent.futures import ThreadPoolExecutor

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
