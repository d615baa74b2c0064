"""Crash points: armed by name through CTLOOP_CRASH_AT (read once at import), the process SIGKILLs itself there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from ctloop.crashpoints import ENV, POINTS, CrashPointError, parse

PROGRAM = """
from ctloop.crashpoints import crash_point
for n in range(1, 6):
    print(n, flush=True)
    crash_point("decision-recorded")
"""


def _run(armed: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV} | ({ENV: armed} if armed is not None else {})
    return subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60)


def test_an_armed_point_kills_the_process_on_the_chosen_pass():
    done = _run("decision-recorded@3")
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["1", "2", "3"]


def test_the_first_pass_by_default_and_other_points_untouched():
    assert _run("decision-recorded").stdout.split() == ["1"]
    finished = _run("offset-committed")
    assert finished.returncode == 0 and finished.stdout.split() == ["1", "2", "3", "4", "5"]


def test_unarmed_the_points_do_nothing():
    finished = _run(None)
    assert finished.returncode == 0 and len(finished.stdout.split()) == 5


@pytest.mark.parametrize(("spec", "problem"), [("no-such-point", "unknown crash point 'no-such-point'"),
                                              ("decision-recorded@0", "must be a positive number"),
                                              ("offset-committed@x", "must be a positive number")])
def test_a_bad_setting_names_the_problem(spec, problem):
    with pytest.raises(CrashPointError, match=problem):
        parse(spec)


def test_a_misspelt_point_fails_the_process_at_start_rather_than_never_crashing():
    done = _run("decision-recorded,decsion-recorded")
    assert done.returncode == 1 and "unknown crash point 'decsion-recorded'" in done.stderr
    assert set(POINTS) >= {"decision-recorded", "offset-committed", "run-key-claimed", "step-output-written"}
