"""ArgoEngine's requests, checked by a stand-in Argo Server on loopback (no cluster runs here).

The stand-in checks what the real server would need: the path with the namespace, the bearer
token, a Workflow that references the retrain WorkflowTemplate with every parameter, and a name
derived from the idempotency key; it answers 409 for a name it already holds, as Argo does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ctloop.settings import ArgoSettings, Settings
from ctloop.workflows.argo_engine import ArgoEngine, workflow_name
from ctloop.workflows.engine import AlreadyRan, RunRequest
from ctloop.workflows.template import PARAMETERS, TEMPLATE_NAME

TOKEN = "s3cr3t-token"
NAMESPACE = "ml-team"


class FakeArgo(BaseHTTPRequestHandler):
    workflows: dict[str, dict] = {}
    problems: list[str] = []

    def log_message(self, *args: object) -> None:
        """Quiet."""

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.problems.append(f"bad Authorization header {self.headers.get('Authorization')!r}")
            self._reply(401, {"message": "unauthorized"})
            return False
        return True

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if self.path != f"/api/v1/workflows/{NAMESPACE}":
            self.problems.append(f"POST to {self.path}")
            return self._reply(404, {"message": "not found"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        workflow = body.get("workflow", {})
        spec = workflow.get("spec", {})
        if spec.get("workflowTemplateRef") != {"name": TEMPLATE_NAME}:
            self.problems.append(f"workflowTemplateRef {spec.get('workflowTemplateRef')}")
        names = [p["name"] for p in spec.get("arguments", {}).get("parameters", [])]
        if tuple(names) != PARAMETERS:
            self.problems.append(f"parameters {names}")
        if "templates" in spec:
            self.problems.append("the Workflow inlines templates instead of referencing the WorkflowTemplate")
        name = workflow.get("metadata", {}).get("name")
        if name in self.workflows:
            return self._reply(409, {"message": f'workflows.argoproj.io "{name}" already exists'})
        workflow["status"] = {"phase": "Pending"}
        self.workflows[name] = workflow
        self._reply(200, workflow)

    def do_GET(self) -> None:
        if not self._authorized():
            return
        prefix = f"/api/v1/workflows/{NAMESPACE}/"
        name = self.path.split("?")[0].removeprefix(prefix)
        if not self.path.startswith(prefix) or name not in self.workflows:
            return self._reply(404, {"message": "not found"})
        workflow = self.workflows[name]
        workflow["status"] = {"phase": "Succeeded"}
        self._reply(200, workflow)


@pytest.fixture
def argo() -> Iterator[str]:
    FakeArgo.workflows, FakeArgo.problems = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeArgo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def engine(host: str) -> ArgoEngine:
    return ArgoEngine(Settings(argo=ArgoSettings(host=host, token=TOKEN, namespace=NAMESPACE)), poll_interval_s=0.01)


REQUEST = RunRequest(model="Churn_v2", data_uri="s3://ctloop-data/churn/", trigger_event_id="evt-9", trigger="data",
                     data_digest="abc123")


def test_submit_creates_a_workflow_from_the_template_named_by_the_idempotency_key(argo):
    handle = engine(argo).submit(REQUEST, wait=False)
    assert FakeArgo.problems == []
    assert handle.status == "Pending"
    assert handle.run_id == workflow_name("Churn_v2", handle.idempotency_key)
    assert handle.run_id.startswith("retrain-churn-v2-")
    sent = FakeArgo.workflows[handle.run_id]
    params = {p["name"]: p["value"] for p in sent["spec"]["arguments"]["parameters"]}
    assert params["model"] == "Churn_v2" and params["event-id"] == "evt-9" and params["data-digest"] == "abc123"
    assert params["idempotency-key"] == handle.idempotency_key
    assert sent["metadata"]["labels"]["ctloop.io/idempotency-key"] == handle.idempotency_key


def test_a_duplicate_submit_is_refused_by_the_server(argo):
    first = engine(argo).submit(REQUEST, wait=False)
    with pytest.raises(AlreadyRan) as refused:
        engine(argo).submit(REQUEST, wait=False)
    assert refused.value.key == first.idempotency_key and refused.value.run_id == first.run_id
    assert len(FakeArgo.workflows) == 1


def test_waiting_polls_the_workflow_until_it_finishes(argo):
    handle = engine(argo).submit(REQUEST.model_copy(update={"data_digest": "other"}), wait=True)
    assert handle.status == "Succeeded"
    assert FakeArgo.problems == []


def test_an_unknown_workflow_is_a_lookup_error(argo):
    with pytest.raises(LookupError, match="no workflow 'retrain-gone-1'"):
        engine(argo).status("retrain-gone-1")


def test_a_wrong_token_is_rejected_not_swallowed(argo):
    from hera.exceptions import Unauthorized

    wrong = ArgoEngine(Settings(argo=ArgoSettings(host=argo, token="nope", namespace=NAMESPACE)))
    with pytest.raises(Unauthorized):
        wrong.submit(REQUEST, wait=False)


def test_workflow_names_are_valid_kubernetes_names():
    name = workflow_name("A_Very.Long_Model-Name" * 5, "0123456789abcdef0123456789abcdef")
    assert len(name) <= 63 and name == name.lower()
    assert all(c.isalnum() or c == "-" for c in name) and not name.endswith("-")
