"""An example project in the loop on the real broker: its trainer named in a saved spec, a LocalSensor with
the shipped sensor specs, the LocalEngine, the registry, and serving through ctloop.deploy.serving."""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ctloop.bus import Bus
from ctloop.bus_factory import open_bus
from ctloop.deploy.registry import CHAMPION, Registry
from ctloop.events import DataArrived, new_event, to_bytes
from ctloop.modelspec import ModelSpec, save_spec
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.catalog import local_sensors
from ctloop.sensors.local.decisions import DecisionRow, list_decisions
from ctloop.sensors.local.sensor import LocalSensor, snapshot_digest
from ctloop.settings import Settings, Topics
from ctloop.version import code_version
from ctloop.workflows.engine import FINAL_STATUSES
from ctloop.workflows.local.engine import LocalEngine

FINAL_DECISIONS = ("triggered", "deduped", "rejected")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def use_example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
    """Make the example's package importable here and in any step process, as `pip install -e` would; its spec."""
    root = EXAMPLES / name
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", f"{root}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"))
    return ModelSpec.model_validate_json((root / "spec.json").read_text())


@dataclass
class Loop:
    settings: Settings
    bus: Bus
    engine: LocalEngine
    sensor: LocalSensor
    model: str

    def arrive(self, uri: str, timeout_s: float = 300.0) -> tuple[str, DecisionRow]:
        """Publish ctloop.data.arrived for `uri`; step the sensor until it decided on the event and any run it
        started has ended. Returns the event id and the sensor's decision."""
        event = new_event(DataArrived(model=self.model, uri=uri))
        self.bus.publish(self.settings.topics.data, to_bytes(event), key=self.model)
        self.bus.flush()
        deadline = time.monotonic() + timeout_s
        decision = None
        while decision is None:
            assert time.monotonic() < deadline, f"the sensor never decided on event {event.id}"
            self.sensor.step(0.2)
            decided = list_decisions(self.settings.state_db, event_id=event.id)
            decision = next((d for d in decided if d.kind in FINAL_DECISIONS), None)
        if decision.kind == "triggered" and decision.run_id:
            while self.engine.status(decision.run_id) not in FINAL_STATUSES:
                assert time.monotonic() < deadline, f"run {decision.run_id} did not end"
                time.sleep(0.2)
            while self.model in self.sensor.state.running:
                self.sensor.step(0.1)
        return event.id, decision

    @property
    def registry(self) -> Registry:
        return Registry(self.settings.tracking_uri)

    def champion(self) -> str | None:
        return self.registry.alias(self.model, CHAMPION)

    def close(self) -> None:
        self.sensor.close()
        self.bus.close()


def open_loop(home: Path, kafka_bootstrap: str, spec: ModelSpec) -> Loop:
    tag = uuid.uuid4().hex[:8]
    topics = Topics(data=f"data-{tag}", drift=f"drift-{tag}", deadletter=f"dead-{tag}", models=f"models-{tag}",
                    runs=f"runs-{tag}", predictions=f"predictions-{tag}")
    settings = Settings(home=home, bus="kafka", kafka_bootstrap=kafka_bootstrap, topics=topics)
    model = f"{spec.name}-{tag}"
    save_spec(spec.model_copy(update={"name": model}), settings)
    bus = open_bus(settings)
    engine = LocalEngine(settings)
    sensor = LocalSensor(settings, bus, engine, local_sensors(settings, code_version()), group=f"sensor-{tag}",
                         policy=AdmissionPolicy(window_s=0), resolve_digest=snapshot_digest(settings))
    return Loop(settings, bus, engine, sensor, model)


def first_champion(loop: Loop, uri: str):
    """The first data event: triggered, the run succeeds, version 1 is champion with the event in its lineage."""
    event_id, first = loop.arrive(uri)
    assert first.kind == "triggered", first.reason
    assert loop.engine.status(first.run_id) == "Succeeded", loop.engine.run(first.run_id)
    assert loop.champion() == "1"
    version = loop.registry.version(loop.model, "1")
    assert version.tags["ctloop.event_id"] == event_id
    assert version.tags["ctloop.data_digest"] and "+trainer:sha256:" in version.tags["ctloop.code_version"]
    return version


def retrains_on_changed_data_only(loop: Loop, uri: str, first, change: Callable[[], object]) -> None:
    """The same data again is refused as already run (no second version); once `change()` has changed it, a
    second event retrains: version 2, from that event, on a new digest, with a decision and its reasons."""
    _, again = loop.arrive(uri)
    assert again.kind == "deduped", f"the same data trained again: {again.kind} {again.reason}"
    assert [v.version for v in loop.registry.versions(loop.model)] == ["1"]
    change()
    second_event, second = loop.arrive(uri)
    assert second.kind == "triggered", second.reason
    assert loop.engine.status(second.run_id) == "Succeeded", loop.engine.run(second.run_id)
    latest = loop.registry.version(loop.model, "2")
    assert latest.tags["ctloop.event_id"] == second_event
    assert latest.tags["ctloop.data_digest"] != first.tags["ctloop.data_digest"]
    assert latest.decision in ("promote", "reject") and latest.reasons


def predict_over_http(url: str, rows: list[dict]) -> list:
    request = urllib.request.Request(f"{url}/predict", data=json.dumps({"rows": rows}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"]

