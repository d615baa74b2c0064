"""Evidently 0.7's own verdicts on a window, as the oracle the fast path must agree with."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class OracleVerdict:
    columns: dict[str, tuple[str, float, bool]]
    dataset_drift: bool


def evidently_verdict(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str],
                      categorical: list[str]) -> OracleVerdict:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    doc = snapshot.dict()
    scores = {
        m["config"]["column"]: (m["config"]["method"], float(m["value"]))
        for m in doc["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }
    columns: dict[str, tuple[str, float, bool]] = {}
    dataset_drift = False
    for test in doc["tests"]:
        failed = str(test["status"]).endswith("FAIL")
        params = test["metric_config"]["params"]
        if params["type"].endswith("ValueDrift"):
            method, score = scores[params["column"]]
            columns[params["column"]] = (method, score, failed)
        elif params["type"].endswith("DriftedColumnsCount"):
            dataset_drift = failed
    return OracleVerdict(columns, dataset_drift)
