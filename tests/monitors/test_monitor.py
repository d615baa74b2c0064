from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ctloop.monitors.monitor import DriftMonitor, MonitorConfig
from ctloop.monitors.reference import Reference
from ctloop.monitors.report import ReportSink
from ctloop.monitors.window import WindowPolicy
from ctloop.predictions import PredictionBatch
from ctloop.profile import build_profile

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _frame(rng: np.random.Generator, n: int, x_shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"x": rng.normal(x_shift, 1, n), "y": rng.normal(0, 1, n), "c": rng.choice(["a", "b"], n)})


def _monitor(config: MonitorConfig, sink: ReportSink | None = None, version: str | None = None) -> DriftMonitor:
    rng = np.random.default_rng(0)
    profile = build_profile(_frame(rng, 3000), numeric=["x", "y"], categorical=["c"])
    return DriftMonitor(Reference(profile, "m", version), config, sink=sink)


def _batch(rng: np.random.Generator, i: int, x_shift: float = 0.0, version: str | None = None) -> PredictionBatch:
    rows = _frame(rng, 1000, x_shift).to_dict(orient="records")
    return PredictionBatch(model="m", version=version, rows=rows, predictions=[0] * 1000,
                           ts=T0 + timedelta(minutes=i))


def test_column_trigger_fires_on_one_drifted_column_where_the_dataset_trigger_does_not():
    rng = np.random.default_rng(1)
    batch = _batch(rng, 0, x_shift=1.0, version="7")
    by_dataset = _monitor(MonitorConfig(window=WindowPolicy(max_rows=1000))).add(batch)[0]
    by_column = _monitor(MonitorConfig(window=WindowPolicy(max_rows=1000), trigger="column")).add(batch)[0]
    assert by_dataset.verdict.drifted_columns == ["x"] and not by_dataset.drifted and by_dataset.event is None
    assert by_column.drifted and by_column.event is not None
    assert by_column.event.data.version == "7", "without a registry version the batches' version is used"
    assert by_column.alert is not None and by_column.report_uri is None
    again = _monitor(MonitorConfig(window=WindowPolicy(max_rows=1000), trigger="column")).add(batch)[0]
    assert again.event.id == by_column.event.id, "a reprocessed window republishes the same event id"


def test_reports_are_kept_every_nth_window_even_without_drift(tmp_path):
    rng = np.random.default_rng(2)
    monitor = _monitor(MonitorConfig(window=WindowPolicy(max_rows=1000), report_every=2),
                       ReportSink(tmp_path.as_uri()), version="3")
    outcomes = [o for i in range(4) for o in monitor.add(_batch(rng, i))]
    assert [o.drifted for o in outcomes] == [False] * 4
    assert [o.report_uri is not None for o in outcomes] == [False, True, False, True]
    assert len(list((tmp_path / "reports" / "m").iterdir())) == 2


def test_a_drift_event_points_at_the_labelled_retrain_data_and_keeps_the_windows_rows_as_evidence(tmp_path):
    rng = np.random.default_rng(4)
    retrain = "s3://bucket/recent/m/"
    config = MonitorConfig(window=WindowPolicy(max_rows=1000), trigger="column")
    monitor = DriftMonitor(_monitor(config).reference, config,
                           sink=ReportSink(tmp_path.as_uri()), retrain_uri=retrain)
    event = monitor.add(_batch(rng, 0, x_shift=3.0))[0].event
    assert event is not None and event.data.data_uri == retrain
    rows = (tmp_path / event.data.rows_uri.removeprefix(tmp_path.as_uri() + "/")).read_text().splitlines()
    assert len(rows) == 1000 and set(json.loads(rows[0])) == {"x", "y", "c"}
    unlabelled = _monitor(config).add(_batch(rng, 1, x_shift=3.0))[0]
    assert unlabelled.event is not None and unlabelled.event.data.data_uri is None
    assert unlabelled.event.data.rows_uri is None, "without a sink no rows are kept"


def test_messages_without_rows_are_committed_with_the_open_window():
    rng = np.random.default_rng(3)
    monitor = _monitor(MonitorConfig(window=WindowPolicy(max_rows=2000)))
    assert monitor.skip("bad-0", stream="p0") == {"p0": "bad-0"}, "nothing open: commit at once"
    assert monitor.add(_batch(rng, 0), "ok-1", "p0") == []
    assert monitor.skip("bad-2", stream="p0") == {}
    closed = monitor.add(_batch(rng, 1), "ok-3", "p1")
    assert closed[0].markers == {"p0": "bad-2", "p1": "ok-3"}


def test_another_models_batch_is_refused():
    monitor = _monitor(MonitorConfig())
    other = PredictionBatch(model="other", rows=[], predictions=[])
    assert not monitor.accepts(other)
    with pytest.raises(ValueError, match="model 'other'"):
        monitor.add(other)


def test_shadow_batches_are_not_monitored():
    """A shadow version scores the champion's rows again; counting them would double every window."""
    rng = np.random.default_rng(5)
    monitor = _monitor(MonitorConfig(window=WindowPolicy(max_rows=1000)))
    shadow = _batch(rng, 0, version="2").model_copy(update={"role": "shadow"})
    assert not monitor.accepts(shadow)
    with pytest.raises(ValueError, match="shadow batch"):
        monitor.add(shadow)
    assert monitor.accepts(_batch(rng, 1, version="3"))


def ink(frame: pd.DataFrame) -> pd.DataFrame:
    """A spec's `monitor.featurize` for image-like inputs: pixel columns -> one monitored column."""
    return pd.DataFrame({"ink": frame[[f"p{i}" for i in range(4)]].mean(axis=1)})


def _pixels(rng: np.random.Generator, n: int, brightness: float) -> pd.DataFrame:
    return pd.DataFrame({f"p{i}": rng.uniform(0, brightness, n) for i in range(4)})


def test_a_featurize_function_turns_served_inputs_into_the_monitored_columns():
    from ctloop.references import row_featurizer

    rng = np.random.default_rng(2)
    profile = build_profile(ink(_pixels(rng, 3000, 1.0)), numeric=["ink"], categorical=[])
    featurize = row_featurizer("tests.monitors.test_monitor:ink")
    config = MonitorConfig(window=WindowPolicy(max_rows=1000))

    def window(brightness: float):
        monitor = DriftMonitor(Reference(profile, "m"), config, featurize=featurize)
        rows = _pixels(rng, 1000, brightness).to_dict(orient="records")
        return monitor.add(PredictionBatch(model="m", rows=rows, predictions=[0] * 1000, ts=T0))[0]

    same, brighter = window(1.0), window(1.6)
    assert same.verdict.bad_rows == {} or not any(same.verdict.bad_rows.values())
    assert not same.drifted and brighter.drifted


# Serving logs columnar batches; the monitor folds them column by column, with the rows form's semantics.

def _as_columnar(batch: PredictionBatch, columns: list[str]) -> PredictionBatch:
    data = [[row[c] for c in columns] for row in batch.rows]
    return PredictionBatch(model=batch.model, version=batch.version, columns=columns, data=data,
                           predictions=batch.predictions, ts=batch.ts)


def _spoiled(rng: np.random.Generator, x_shift: float = 0.0) -> list[dict]:
    rows = _frame(rng, 1000, x_shift).to_dict(orient="records")
    rows[3]["x"], rows[5]["x"], rows[7]["y"], rows[9]["c"], rows[11]["c"] = None, "oops", float("nan"), None, [1]
    rows[13]["y"] = True  # a bool is not a number
    return rows


@pytest.mark.parametrize("x_shift", [0.0, 1.0])
def test_a_columnar_batch_gives_the_verdict_its_rows_give(x_shift):
    rows = _spoiled(np.random.default_rng(6), x_shift)
    as_rows = PredictionBatch(model="m", rows=rows, predictions=[0] * 1000, ts=T0)
    config = MonitorConfig(window=WindowPolicy(max_rows=1000), trigger="column")
    expected = _monitor(config).add(as_rows)[0].verdict
    got = _monitor(config).add(_as_columnar(as_rows, ["c", "x", "y"]))[0].verdict
    assert got == expected
    assert expected.bad_rows == {"missing": 0, "extra": 0, "nan": 3, "wrong_type": 3}
    assert (x_shift > 0) == bool(expected.drifted_columns)


def test_a_column_the_batch_lacks_is_missing_and_one_the_profile_lacks_is_extra_in_every_row():
    rng = np.random.default_rng(7)
    rows = [{"x": r["x"], "c": r["c"], "z": 1} for r in _frame(rng, 1000).to_dict(orient="records")]
    as_rows = PredictionBatch(model="m", rows=rows, predictions=[0] * 1000, ts=T0)
    config = MonitorConfig(window=WindowPolicy(max_rows=1000))
    expected = _monitor(config).add(as_rows)[0].verdict
    got = _monitor(config).add(_as_columnar(as_rows, ["x", "c", "z"]))[0].verdict
    assert got == expected and got.bad_rows == {"missing": 1000, "extra": 1000, "nan": 0, "wrong_type": 0}


def test_a_columnar_windows_rows_are_kept_as_evidence(tmp_path):
    rng = np.random.default_rng(4)
    config = MonitorConfig(window=WindowPolicy(max_rows=1000), trigger="column")
    monitor = DriftMonitor(_monitor(config).reference, config, sink=ReportSink(tmp_path.as_uri()))
    batch = _as_columnar(_batch(rng, 0, x_shift=3.0), ["x", "y", "c"])
    outcome = monitor.add(batch)[0]
    assert outcome.report_uri is not None
    kept = (tmp_path / outcome.event.data.rows_uri.removeprefix(tmp_path.as_uri() + "/")).read_text().splitlines()
    assert [json.loads(line) for line in kept] == batch.rows


def test_a_featurize_function_gets_a_columnar_batchs_rows_as_dicts():
    seen: list[list[dict]] = []

    def featurize(rows: list[dict]) -> list[dict]:
        seen.append(rows)
        return [{"x": r["a"], "y": r["a"], "c": "a"} for r in rows]

    monitor = DriftMonitor(_monitor(MonitorConfig()).reference, MonitorConfig(), featurize=featurize)
    monitor.add(PredictionBatch(model="m", columns=["a"], data=[[1.0], [2.0]], predictions=[0, 0], ts=T0))
    assert seen == [[{"a": 1.0}, {"a": 2.0}]]
