"""The drift monitor as ctloop runs it: the model's reference, report sink and retrain URI, over a bus.

`ctloop monitor run`, the demo and the tests assemble it here, so its wiring is written once.
"""

from __future__ import annotations

from pathlib import Path

from ctloop.bus import Bus
from ctloop.monitors.alerts import AlertLedger, WebhookNotifier
from ctloop.monitors.monitor import DriftMonitor, MonitorConfig
from ctloop.monitors.reference import reference_from_file, reference_from_registry
from ctloop.monitors.report import ReportSink
from ctloop.monitors.service import DEFAULT_GROUP, MonitorService, featurize_for, retrain_uri_for
from ctloop.settings import Settings


def drift_monitor(settings: Settings, model: str, config: MonitorConfig, *, profile: Path | None = None
                  ) -> DriftMonitor:
    """The monitor of `model` against the reference in `profile`, or else its champion's training data. Reports
    and the alert episode state go under `settings.objects_uri` (s3:// in a cluster, so they outlive the pod;
    reports also into the reference's MLflow run, when it has one); drift events name the spec's `retrain_uri`
    as the data to retrain on; the spec's `monitor.featurize`, if any, turns each served batch into the
    monitored columns."""
    reference = (reference_from_file(profile, model) if profile is not None
                 else reference_from_registry(settings.tracking_uri, model))
    sink = ReportSink(settings.objects_uri, s3_endpoint_url=settings.s3_endpoint_url,
                      tracking_uri=settings.tracking_uri if reference.run_id else None, run_id=reference.run_id)
    ledger = AlertLedger(settings.objects_uri, s3_endpoint_url=settings.s3_endpoint_url)
    return DriftMonitor(reference, config, sink=sink, retrain_uri=retrain_uri_for(model, settings),
                        featurize=featurize_for(model, settings), ledger=ledger)


def monitor_service(
    settings: Settings,
    bus: Bus,
    model: str,
    config: MonitorConfig,
    *,
    profile: Path | None = None,
    notifier: WebhookNotifier | None = None,
    group: str = DEFAULT_GROUP,
) -> MonitorService:
    """`drift_monitor` reading the prediction topic of `bus` as consumer group `group`, publishing drift events
    and alerting `notifier`. The caller owns `bus`; `close()` the service."""
    return MonitorService(bus, settings, drift_monitor(settings, model, config, profile=profile),
                          notifier=notifier, group=group)
