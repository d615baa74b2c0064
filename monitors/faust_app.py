"""The drift monitor as a faust-streaming app on the Kafka prediction topic.

The agent runs the same `DriftMonitor` as the embedded service. Events are taken with `noack()` and
acknowledged only once their window's verdict is published (Faust then commits the acknowledged
offsets), so a crash loses no window. Monitor work (tests, Evidently reports, producing, the
webhook) runs in a worker thread so that it never stalls Faust's event loop and its heartbeats.
Drift events and dead letters go out through a ctloop `Bus` (a `KafkaBus` in production).
`ctloop monitor run --runtime faust` starts it as a worker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from ctloop.bus import Bus, Message
from ctloop.monitors.alerts import WebhookNotifier
from ctloop.monitors.delivery import deliver, read_batch
from ctloop.monitors.monitor import DriftMonitor, WindowOutcome
from ctloop.settings import Settings

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)


class FaustRuntime:
    """What the agent does per event, free of Faust: returns the events that may now be acked."""

    def __init__(self, monitor: DriftMonitor, bus: Bus, settings: Settings,
                 notifier: WebhookNotifier | None = None) -> None:
        self.monitor = monitor
        self.bus = bus
        self.settings = settings
        self.notifier = notifier
        self.outcomes: list[WindowOutcome] = []
        self._pending: list[Any] = []
        # The agent's handle and the timer's tick run in separate worker threads; unserialised, a tick
        # could close the window while handle is adding a batch and ack that batch's event with the
        # wrong window, so a crash would lose it.
        self._lock = threading.Lock()

    def handle(self, message: Message, event: Any) -> list[Any]:
        with self._lock:
            return self._handle(message, event)

    def tick(self) -> list[Any]:
        with self._lock:
            return self._tick()

    def _handle(self, message: Message, event: Any) -> list[Any]:
        batch = read_batch(self.bus, self.settings.topics.deadletter, message)
        if batch is None or not self.monitor.accepts(batch):
            return self._hold(event)
        self._pending.append(event)
        closed = self.monitor.add(batch, event, (message.topic, message.partition))
        for outcome in closed:
            self._finish(outcome)
        if not closed:
            return []
        # A time-closed window leaves the event that closed it in the new, open window.
        keep = 0 if self.monitor.windows.current.batches == 0 else 1
        done, self._pending = self._pending[: len(self._pending) - keep], self._pending[len(self._pending) - keep:]
        return done

    def _tick(self) -> list[Any]:
        closed = self.monitor.tick()
        for outcome in closed:
            self._finish(outcome)
        if not closed:
            return []
        done, self._pending = self._pending, []
        return done

    def _hold(self, event: Any) -> list[Any]:
        """Events without rows for the monitor are acked with the open window, or now if it is empty."""
        if self.monitor.windows.current.batches == 0:
            done, self._pending = [*self._pending, event], []
            return done
        self._pending.append(event)
        return []

    def _finish(self, outcome: WindowOutcome) -> None:
        deliver(outcome, self.monitor.model, self.bus, self.settings.topics.drift, self.notifier, self.monitor.ledger)
        self.outcomes.append(outcome)


def create_app(
    runtime: FaustRuntime,
    *,
    app_id: str = "ctloop-monitor",
    tick_s: float = 5.0,
    **faust_options: Any,
) -> faust.App:
    import faust

    settings = runtime.settings
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        store="memory://",
        **faust_options,
    )
    topic = app.topic(settings.topics.predictions, key_type=bytes, value_type=bytes)

    @app.agent(topic, name="monitor_predictions")
    async def monitor_predictions(stream: Any) -> None:
        async for event in stream.noack().events():
            message = _as_message(event)
            for done in await asyncio.to_thread(runtime.handle, message, event):
                done.ack()

    @app.timer(interval=tick_s)
    async def close_idle_windows() -> None:
        for done in await asyncio.to_thread(runtime.tick):
            done.ack()

    return app


def _as_message(event: Any) -> Message:
    m = event.message
    key = m.key if isinstance(m.key, bytes | None) else str(m.key).encode()
    value = event.value if isinstance(event.value, bytes) else str(event.value).encode()
    timestamp_ms = int(m.timestamp * 1000) if m.timestamp else None
    return Message(m.topic, m.partition, m.offset, key, value, tuple(m.headers or ()), timestamp_ms)
