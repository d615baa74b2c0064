"""The admission gateway: admission control for the cluster, behind Argo Events.

Public: `Gateway` (one replica), `GatewayStore` (the state replicas share), `Submitter`/`open_submitter`,
`admission_payload` and `candidate` (the admission request, as a trigger writes and the gateway reads it),
and `gateway` (the assembly `ctloop gateway run` uses).
"""

from ctloop.sensors.gateway.assembly import gateway
from ctloop.sensors.gateway.gateway import Gateway
from ctloop.sensors.gateway.request import RequestInvalid, admission_payload, candidate
from ctloop.sensors.gateway.store import DecisionRow, Fenced, GatewayStore
from ctloop.sensors.gateway.submitter import Submitter, open_submitter

__all__ = ["DecisionRow", "Fenced", "Gateway", "GatewayStore", "RequestInvalid", "Submitter", "admission_payload",
           "candidate", "gateway", "open_submitter"]
