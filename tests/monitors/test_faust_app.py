"""The Faust app runs the same monitor: through Faust's test agent, and as a worker on the real broker."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ctloop.bus import Bus, Message
from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import parse
from ctloop.monitors.faust_app import FaustRuntime, create_app
from ctloop.monitors.monitor import DriftMonitor, MonitorConfig
from ctloop.monitors.reference import Reference
from ctloop.monitors.window import WindowPolicy
from ctloop.predictions import PredictionBatch
from ctloop.profile import build_profile
from ctloop.settings import Settings, Topics

ROWS = 1000
SHIFTS = [0, 0, 3, 3]


def _frame(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    return pd.DataFrame({"x": rng.normal(shift, 1, n), "c": rng.choice(["a", "b", "c"], n)})


def _runtime(bus: Bus, settings: Settings) -> FaustRuntime:
    rng = np.random.default_rng(0)
    reference = Reference(build_profile(_frame(rng, 2000, 0), numeric=["x"], categorical=["c"]), "m", "1")
    monitor = DriftMonitor(reference, MonitorConfig(window=WindowPolicy(max_rows=ROWS)))
    return FaustRuntime(monitor, bus, settings)


def _batches() -> list[bytes]:
    rng = np.random.default_rng(1)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        PredictionBatch(model="m", rows=_frame(rng, ROWS, s).to_dict(orient="records"), predictions=[0] * ROWS,
                        ts=t0 + timedelta(minutes=i)).to_bytes()
        for i, s in enumerate(SHIFTS)
    ]


def test_faust_agent_runs_the_monitor(tmp_path):
    settings = Settings(home=tmp_path)
    bus = EmbeddedBus(tmp_path / "bus.db")
    runtime = _runtime(bus, settings)
    agent = create_app(runtime, app_id="monitor-unit").agents["monitor_predictions"]

    async def feed() -> None:
        async with agent.test_context() as test_agent:
            for value in [*_batches(), b"garbage"]:
                await test_agent.put(value)
            # The agent works in a thread: let it finish before the test context cancels it.
            for _ in range(200):
                if bus.end_offsets(settings.topics.deadletter) == 1:
                    break
                await asyncio.sleep(0.05)

    asyncio.run(feed())
    assert [o.drifted for o in runtime.outcomes] == [False, False, True, True]
    drift = bus.consumer([settings.topics.drift], "t").poll(timeout_s=0.5)
    assert [parse(m.value).data.model for m in drift] == ["m", "m"]
    assert len(bus.consumer([settings.topics.deadletter], "t").poll(timeout_s=0.5)) == 1
    bus.close()


class _HeldFlush(EmbeddedBus):
    """Holds its first flush until released, so a test can act while a window is being published."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.flushing = threading.Event()
        self.release = threading.Event()

    def flush(self, timeout_s: float = 10.0) -> None:
        self.flushing.set()
        self.release.wait(10)
        super().flush(timeout_s)


def test_the_timer_waits_while_the_agent_finishes_a_window(tmp_path):
    settings = Settings(home=tmp_path)
    bus = _HeldFlush(tmp_path / "bus.db")
    runtime = _runtime(bus, settings)
    batches = _batches()
    for offset, value in enumerate(batches[:2]):
        assert runtime.handle(Message("p", 0, offset, b"m", value, (), None), offset) == [offset]
    agent = threading.Thread(target=runtime.handle, args=(Message("p", 0, 2, b"m", batches[2], (), None), 2))
    agent.start()
    assert bus.flushing.wait(10)
    timer = threading.Thread(target=runtime.tick)
    timer.start()
    timer.join(0.5)
    still_waiting = timer.is_alive()
    bus.release.set()
    agent.join()
    timer.join()
    assert still_waiting
    assert [o.drifted for o in runtime.outcomes] == [False, False, True]
    bus.close()


@pytest.mark.kafka
def test_faust_worker_on_the_real_broker(tmp_path, kafka_bus, kafka_bootstrap, unique_topic):
    topics = Topics(predictions=f"{unique_topic}.p", drift=f"{unique_topic}.d", deadletter=f"{unique_topic}.dl")
    settings = Settings(home=tmp_path, kafka_bootstrap=kafka_bootstrap, topics=topics)
    for value in _batches():
        kafka_bus.publish(topics.predictions, value, key="m")
    kafka_bus.flush()
    runtime = _runtime(kafka_bus, settings)
    app = create_app(runtime, app_id=f"monitor-{unique_topic}", datadir=str(tmp_path / "faust"),
                     topic_partitions=1, consumer_auto_offset_reset="earliest")

    async def run_until_done() -> None:
        await app.start()
        try:
            deadline = time.monotonic() + 60
            while len(runtime.outcomes) < len(SHIFTS) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        finally:
            await app.stop()

    asyncio.run(run_until_done())
    assert [o.drifted for o in runtime.outcomes] == [False, False, True, True]
    consumer = kafka_bus.consumer([topics.drift], "reader")
    events = []
    for _ in range(20):
        events += consumer.poll(timeout_s=0.5)
        if len(events) >= 2:
            break
    consumer.close()
    assert len(events) == 2
