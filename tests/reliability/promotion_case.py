"""The policy and provenance under which the promotion reliability tests register and promote versions."""

from __future__ import annotations

from ctloop.modelspec import PromotionPolicy

POLICY = PromotionPolicy(metric="accuracy", direction="max", min_improvement=0.01)
PROVENANCE = {"event_id": "evt", "data_digest": "sha256:x", "code_version": "test", "run_id": None}
