"""Fixtures: each overlay built once per session with `kubectl kustomize` (or `kustomize build`)."""

from __future__ import annotations

import pytest

from tests.k8s.manifests import K8S, OVERLAYS, Manifest, build, kustomize_command


@pytest.fixture(scope="session")
def built() -> dict[str, list[Manifest]]:
    """Overlay name -> its built objects; skips the k8s tests where no kustomize exists."""
    if kustomize_command() is None:
        pytest.skip("neither kubectl nor kustomize is installed: the kustomize build cannot be checked")
    return {name: build(K8S / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, built: dict[str, list[Manifest]]) -> list[Manifest]:
    """Each overlay's built objects in turn."""
    return built[request.param]
