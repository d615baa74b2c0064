"""The S3 poller against moto's S3 server on loopback."""

from __future__ import annotations

import boto3
import pytest

from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import parse
from ctloop.sensors.local.s3_poller import S3Poller, object_event_id
from ctloop.settings import Settings

pytestmark = pytest.mark.s3


@pytest.fixture
def settings(tmp_path, s3_endpoint):
    return Settings(home=tmp_path, s3_endpoint_url=s3_endpoint)


def published(bus: EmbeddedBus, settings: Settings) -> list:
    return [parse(m.value) for m in bus.consumer([settings.topics.data], "t").poll(timeout_s=0.05)]


def test_each_new_object_is_emitted_once_across_restarts(settings, s3_endpoint, s3_bucket):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.put_object(Bucket=s3_bucket, Key="incoming/churn/a.csv", Body=b"x,y\n1,2\n")
    s3.put_object(Bucket=s3_bucket, Key="elsewhere/b.csv", Body=b"x,y\n1,2\n")
    bus = EmbeddedBus(settings.state_db)
    poller = S3Poller(settings, bus, f"s3://{s3_bucket}/incoming/", "churn")
    [first] = poller.poll()
    assert first.data.uri == f"s3://{s3_bucket}/incoming/churn/a.csv"
    assert first.data.model == "churn"
    assert poller.poll() == []
    poller.close()

    s3.put_object(Bucket=s3_bucket, Key="incoming/churn/c.csv", Body=b"x,y\n3,4\n")
    restarted = S3Poller(settings, bus, f"s3://{s3_bucket}/incoming/", "churn")
    [second] = restarted.poll()
    assert second.data.uri.endswith("incoming/churn/c.csv")
    assert [e.id for e in published(bus, settings)] == [first.id, second.id]
    restarted.close()
    bus.close()


def test_a_rewritten_object_is_a_new_arrival_with_a_stable_id(settings, s3_endpoint, s3_bucket):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.put_object(Bucket=s3_bucket, Key="in/a.csv", Body=b"v1")
    bus = EmbeddedBus(settings.state_db)
    poller = S3Poller(settings, bus, f"s3://{s3_bucket}/in/", "churn")
    [v1] = poller.poll()
    s3.put_object(Bucket=s3_bucket, Key="in/a.csv", Body=b"v2")
    [v2] = poller.poll()
    etag = s3.head_object(Bucket=s3_bucket, Key="in/a.csv")["ETag"].strip('"')
    assert v2.id == object_event_id(f"s3://{s3_bucket}/in/a.csv", etag) != v1.id
    poller.close()
    bus.close()
