"""The promotion policy as a pure function: examples, then properties over generated metrics."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from ctloop.deploy.policy import decide
from ctloop.evaluation import Evaluation
from ctloop.modelspec import Guardrail, PromotionPolicy


def ev(challenger: dict[str, float], champion: dict[str, float] | None) -> Evaluation:
    return Evaluation(
        model="m", challenger_uri="models:/m-1", challenger=challenger,
        champion_version="3" if champion is not None else None, champion=champion,
        holdout_digest="h", holdout_rows=10,
    )


ACCURACY = PromotionPolicy(metric="accuracy", direction="max", min_improvement=0.01)
LOSS = PromotionPolicy(metric="loss", direction="min", min_improvement=0.0)


def test_no_champion_promotes_and_says_so():
    decision = decide(ev({"accuracy": 0.5}, None), ACCURACY)
    assert decision.promote and decision.label == "promote"
    assert decision.reasons == ("no champion: first version promoted (accuracy=0.5)",)


def test_improvement_at_least_the_minimum_promotes():
    decision = decide(ev({"accuracy": 0.91}, {"accuracy": 0.90}), ACCURACY)
    assert decision.promote
    assert "improved by 0.01" in decision.reasons[0]


def test_improvement_below_the_minimum_rejects():
    decision = decide(ev({"accuracy": 0.905}, {"accuracy": 0.90}), ACCURACY)
    assert not decision.promote
    assert "below the minimum 0.01" in decision.reasons[0]


def test_a_tie_is_not_an_improvement():
    assert not decide(ev({"loss": 0.3}, {"loss": 0.3}), LOSS).promote


def test_direction_min_promotes_a_lower_loss():
    assert decide(ev({"loss": 0.2}, {"loss": 0.3}), LOSS).promote
    assert not decide(ev({"loss": 0.4}, {"loss": 0.3}), LOSS).promote


def test_missing_metric_rejects_naming_it():
    assert decide(ev({"auc": 0.9}, None), ACCURACY).reasons == ("challenger has no metric 'accuracy'",)
    decision = decide(ev({"accuracy": 0.9}, {"auc": 0.9}), ACCURACY)
    assert not decision.promote and decision.reasons == ("champion 3 has no metric 'accuracy'",)


def test_nan_metric_rejects():
    decision = decide(ev({"accuracy": math.nan}, None), ACCURACY)
    assert not decision.promote and "not finite" in decision.reasons[0]


def test_guardrail_worse_than_tolerance_rejects_even_when_primary_improves():
    policy = ACCURACY.model_copy(update={"guardrails": (Guardrail(metric="latency_ms", direction="min", tolerance=2),)})
    ok = decide(ev({"accuracy": 0.95, "latency_ms": 11.5}, {"accuracy": 0.9, "latency_ms": 10}), policy)
    bad = decide(ev({"accuracy": 0.95, "latency_ms": 13}, {"accuracy": 0.9, "latency_ms": 10}), policy)
    assert ok.promote and "guardrail latency_ms held" in ok.reasons[1]
    assert not bad.promote
    assert bad.reasons == ("guardrail latency_ms 13 vs champion 10 worsened by 3 (tolerance 2)",)


def test_missing_guardrail_metric_rejects():
    policy = ACCURACY.model_copy(update={"guardrails": (Guardrail(metric="recall"),)})
    decision = decide(ev({"accuracy": 0.95}, {"accuracy": 0.9, "recall": 0.5}), policy)
    assert not decision.promote and decision.reasons == ("guardrail: challenger has no metric 'recall'",)


def test_every_failure_is_reported():
    policy = ACCURACY.model_copy(update={"guardrails": (Guardrail(metric="recall"),)})
    decision = decide(ev({"accuracy": 0.8, "recall": 0.1}, {"accuracy": 0.9, "recall": 0.5}), policy)
    assert len(decision.reasons) == 2


metric = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
policies = st.builds(
    PromotionPolicy, metric=st.just("m"), direction=st.sampled_from(["max", "min"]),
    min_improvement=st.floats(min_value=0, max_value=10),
)


@given(policies, metric, metric)
def test_never_promotes_when_the_primary_metric_is_not_better(policy, a, b):
    challenger, champion = (min(a, b), max(a, b)) if policy.direction == "max" else (max(a, b), min(a, b))
    decision = decide(ev({"m": challenger}, {"m": champion}), policy)
    assert not decision.promote
    assert decision.reasons


@given(policies, metric)
def test_always_promotes_without_a_champion(policy, value):
    assert decide(ev({"m": value}, None), policy).promote


@given(policies, metric, metric, st.floats(min_value=0, max_value=1e3))
def test_a_better_challenger_never_loses_what_a_worse_one_won(policy, challenger, champion, extra):
    better = challenger + extra if policy.direction == "max" else challenger - extra
    if decide(ev({"m": challenger}, {"m": champion}), policy).promote:
        assert decide(ev({"m": better}, {"m": champion}), policy).promote


@given(policies, metric, metric)
def test_decisions_are_deterministic_and_always_explained(policy, a, b):
    first = decide(ev({"m": a}, {"m": b}), policy)
    assert first == decide(ev({"m": a}, {"m": b}), policy)
    assert first.reasons
