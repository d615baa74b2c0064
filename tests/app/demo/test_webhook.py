"""The webhook receiver keeps every JSON alert it is sent, in order, and refuses what is not JSON."""

import httpx

from ctloop.app.demo.webhook import WebhookReceiver


def test_posts_are_recorded_in_order():
    with WebhookReceiver() as receiver:
        assert receiver.url.startswith("http://127.0.0.1:")
        for i in range(3):
            assert httpx.post(receiver.url, json={"text": f"alert {i}"}).status_code == 200
        assert [r["body"]["text"] for r in receiver.received] == ["alert 0", "alert 1", "alert 2"]
        assert receiver.received[0]["path"] == "/alerts"


def test_a_body_that_is_not_json_is_refused_and_not_recorded():
    with WebhookReceiver() as receiver:
        response = httpx.post(receiver.url, content=b"{not json")
        assert response.status_code == 400
        assert receiver.received == []
