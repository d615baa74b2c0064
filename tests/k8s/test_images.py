"""The manifests run the images this repository builds: every ctloop image they name is a tag `make image`
produces for the package's version, and the workflow steps use the runtime image, as Settings says."""

from __future__ import annotations

import tomllib

from ctloop.settings import Settings
from tests.k8s.manifests import REPO, Manifest

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
RUNTIME = f"ghcr.io/ctloop/ctloop:{VERSION}"
CONTROL = f"ghcr.io/ctloop/ctloop-control:{VERSION}"


def images(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["image"]} if isinstance(node.get("image"), str) else set()
        return found.union(*(images(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(images(v) for v in node))
    return set()


def test_the_build_script_tags_the_images_the_manifests_use() -> None:
    script = (REPO / "docker" / "build.sh").read_text()
    assert "ghcr.io/ctloop/ctloop:$VERSION" in script and "ghcr.io/ctloop/ctloop-control:$VERSION" in script
    assert Settings().image == RUNTIME


def test_every_ctloop_image_in_the_manifests_is_one_the_build_produces(overlay: list[Manifest]) -> None:
    named = {image for manifest in overlay for image in images(manifest) if "ctloop/" in image}
    assert named == {RUNTIME, CONTROL}


def test_torch_workloads_run_the_runtime_image_and_the_rest_the_control_image(overlay: list[Manifest]) -> None:
    by_name = {m["metadata"]["name"]: images(m) for m in overlay if m["kind"] in ("Deployment", "WorkflowTemplate")}
    # The train step runs the image the snapshot step resolves: the spec's digest-pinned one, else Settings.image.
    assert by_name["ctloop-retrain"] == {RUNTIME, "{{inputs.parameters.image}}"}
    assert by_name["ctloop-serving"] == {RUNTIME}
    assert by_name["ctloop-mlflow"] == {CONTROL}
    assert by_name["ctloop-monitor"] == {CONTROL}
    assert by_name["ctloop-outcomes"] == {CONTROL}
