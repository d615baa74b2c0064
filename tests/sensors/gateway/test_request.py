"""The admission request as the gateway reads it: what the Sensors' Kafka trigger writes, or a clear refusal."""

from __future__ import annotations

import json

import pytest

from ctloop.bus import Message
from ctloop.sensors.gateway import RequestInvalid, candidate


def message(payload: object, key: str | None = "churn") -> Message:
    value = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Message(topic="ctloop.admission", partition=0, offset=0, key=key.encode() if key else None, value=value,
                   headers=(), timestamp_ms=1_700_000_000_000)


GOOD = {"model": "churn", "data-uri": "s3://b/churn/1", "event-id": "e1", "trigger": "data",
        "idempotency-key": "k1", "workflow-name": "retrain-churn-k1", "gpu": "true"}


def test_a_trigger_payload_becomes_the_candidate_run():
    c = candidate(message(GOOD))
    assert (c.model, c.uri, c.event_id, c.trigger, c.key, c.gpu, c.event_time) == (
        "churn", "s3://b/churn/1", "e1", "data", "k1", True, 1_700_000_000.0)


@pytest.mark.parametrize(("payload", "key", "reason"), [
    (b"{oops", "churn", "not JSON"),
    ([1, 2], "churn", "a JSON object"),
    ({**GOOD, "idempotency-key": ""}, "churn", "lacks idempotency-key"),
    ({k: v for k, v in GOOD.items() if k != "model"}, "churn", "lacks model"),
    ({**GOOD, "trigger": "whim"}, "churn", "trigger 'whim' is not one of"),
    ({**GOOD, "gpu": "yes"}, "churn", "gpu 'yes' is not true or false"),
    (GOOD, "fraud", "message key 'fraud' is not the request's model 'churn'"),
])
def test_a_malformed_request_is_refused_with_the_reason(payload, key, reason):
    with pytest.raises(RequestInvalid, match=reason):
        candidate(message(payload, key))


def test_a_request_digest_is_the_same_for_the_same_parameters_however_written_and_differs_with_any_value():
    from ctloop.sensors.gateway.request import read_request

    digest = read_request(message(GOOD)).digest
    rewritten = json.dumps(dict(reversed(GOOD.items())), indent=2).encode()
    assert read_request(message(rewritten)).digest == digest, "key order and spacing are the producer's"
    assert read_request(Message(topic="other", partition=3, offset=9, key=b"churn", value=json.dumps(GOOD).encode(),
                                headers=(), timestamp_ms=0)).digest == digest, "where it lands is not its body"
    for name, value in (("data-uri", "s3://b/churn/2"), ("idempotency-key", "k2"), ("gpu", "false")):
        assert read_request(message({**GOOD, name: value})).digest != digest, name
