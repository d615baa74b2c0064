"""The promotion policy: whether a challenger replaces the champion, with the reasons in words.

Pure: the same evaluation and policy always give the same decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ctloop.evaluation import Evaluation
from ctloop.modelspec import PromotionPolicy

# Absorbs float noise in `a - b >= threshold`, so 0.91 - 0.90 counts as an improvement of 0.01.
_EPS = 1e-12


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]

    @property
    def label(self) -> Literal["promote", "reject"]:
        return "promote" if self.promote else "reject"


def _gain(challenger: float, champion: float, direction: str) -> float:
    """How much better the challenger is; negative when it is worse."""
    return challenger - champion if direction == "max" else champion - challenger


def _metric(metrics: dict[str, float] | None, name: str, whose: str) -> tuple[float | None, str | None]:
    value = (metrics or {}).get(name)
    if value is None:
        return None, f"{whose} has no metric {name!r}"
    if not math.isfinite(value):
        return None, f"{whose} metric {name!r} is not finite ({value})"
    return value, None


def decide(evaluation: Evaluation, policy: PromotionPolicy) -> Decision:
    """Promote when there is no champion, or when the primary metric improves by at least
    `min_improvement` and no guardrail metric gets worse by more than its tolerance."""
    challenger, problem = _metric(evaluation.challenger, policy.metric, "challenger")
    if problem:
        return Decision(False, (problem,))
    if evaluation.champion is None:
        return Decision(True, (f"no champion: first version promoted ({policy.metric}={challenger:.6g})",))

    champion, problem = _metric(evaluation.champion, policy.metric, f"champion {evaluation.champion_version}")
    if problem:
        return Decision(False, (problem,))
    assert challenger is not None and champion is not None
    failures: list[str] = []
    passes: list[str] = []
    gain = _gain(challenger, champion, policy.direction)
    comparison = f"{policy.metric} {challenger:.6g} vs champion {champion:.6g} ({policy.direction})"
    if gain <= 0:
        failures.append(f"{comparison}: no improvement")
    elif gain + _EPS < policy.min_improvement:
        failures.append(f"{comparison}: improvement {gain:.6g} below the minimum {policy.min_improvement:.6g}")
    else:
        passes.append(f"{comparison}: improved by {gain:.6g}")

    for guard in policy.guardrails:
        ours, problem = _metric(evaluation.challenger, guard.metric, "challenger")
        theirs, problem = (None, problem) if problem else _metric(
            evaluation.champion, guard.metric, f"champion {evaluation.champion_version}"
        )
        if problem:
            failures.append(f"guardrail: {problem}")
            continue
        assert ours is not None and theirs is not None
        loss = -_gain(ours, theirs, guard.direction)
        if loss > guard.tolerance + _EPS:
            failures.append(
                f"guardrail {guard.metric} {ours:.6g} vs champion {theirs:.6g} worsened by {loss:.6g}"
                f" (tolerance {guard.tolerance:.6g})"
            )
        else:
            passes.append(f"guardrail {guard.metric} held ({ours:.6g} vs {theirs:.6g})")
    if failures:
        return Decision(False, tuple(failures))
    return Decision(True, tuple(passes))
