"""The drift monitor: Evidently 0.7's drift rules on a fast path, over windows of served predictions.

Public: `assembly.drift_monitor` and `assembly.monitor_service` (the monitor as `ctloop monitor run` wires it),
`monitor.DriftMonitor` and `MonitorConfig`, `service.MonitorService`, `reference`, `alerts`, `report`, and
`faust_app` for the Faust runtime.

Outcomes (labels that arrive later, live quality): `outcomes` (`OutcomeStore`; its records `JoinedPrediction`,
`ServedBatch`, `Label` from `outcome_records`; the in-memory join `join_index`), `live_quality.live_quality`,
`joiner.Joiner`, `quality` (the spec's rule, `QualityMonitor`), `outcomes_landing.Lander`, and
`outcomes_service.outcomes_service` (the runtime as `ctloop outcomes run` wires it).

The bake window (a promoted champion judged against the previous one on the same live labels): `bake`
(`judge`, `bake_once`, and the `Bakes` protocol that `ctloop.deploy.bake.RegistryBakes` implements).
"""
