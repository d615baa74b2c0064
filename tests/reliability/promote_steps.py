"""A workflow step that promotes one registered version automatically, as the retrain template's promote
step does: through deploy.promotion, with transient registry failures turned into the retried exit code."""

# No `from __future__ import annotations`: Hera reads the annotations at build time.

from typing import Annotated

from hera.workflows import Parameter


def promote_version(model: Annotated[str, Parameter(name="model")],
                    version: Annotated[str, Parameter(name="version")],
                    tracking_uri: Annotated[str, Parameter(name="tracking-uri")]) -> None:
    from ctloop.deploy.promotion import promote
    from ctloop.deploy.registry import Registry, Retry
    from ctloop.workflows.steps import transient_exits

    with transient_exits():
        promote(Registry(tracking_uri, retry=Retry(attempts=2, base_delay_s=0.1, timeout_s=3)), model, version,
                actor="ctloop-workflow", reason="evaluation says promote", manual=False)
