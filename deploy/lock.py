"""A per-model promotion lock kept in the MLflow registry, so every pod that reaches MLflow shares it.

MLflow aliases are blind upserts, so everything that moves them holds this lock. MLflow offers no
compare-and-set either, only upserts and deletes of registered-model tags; the lock is built on those:

1. a contender reads the model's tags and waits while a live ticket (`ctloop.lock.<ticket>`) exists;
2. it writes its own ticket under a key no one else uses, with an expiry, and reads the tags again;
3. alone: it holds the lock. Not alone: the ticket that sorts first stays and reads again, every
   other one is withdrawn and retried after a random pause.

Safety rests on the registry's database ordering writes and reads: of two contenders that each
wrote and then read, the later reader sees the earlier writer's ticket, so at most one finds itself
alone. A ticket is a lease: it expires `ttl_s` after its last renewal, the holder renews it from a
thread and stops trusting it `margin_s` before it could expire for anyone else, so a crashed holder
blocks the others for one lease at most. Pods' clocks are assumed to agree within `margin_s` (NTP).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ctloop.deploy.registry import Registry, RegistryError
from ctloop.failures import Failure

log = logging.getLogger(__name__)

LOCK_PREFIX = "ctloop.lock."
# Tickets this process could not delete (the registry was down); it deletes them on its next try.
_abandoned: set[tuple[str, str, str]] = set()
_abandoned_guard = threading.Lock()

class LockTimeout(TimeoutError, Failure):
    """The lock stayed taken for longer than the caller would wait."""


class LockLost(RuntimeError):
    """The holder's lease ran out (renewals failed), so another process may hold the lock now."""


@dataclass(frozen=True, slots=True)
class Lease:
    ttl_s: float = 15.0
    renew_every_s: float = 3.0
    margin_s: float = 3.0
    wait_s: float = 120.0

    def __post_init__(self) -> None:
        if not 0 < self.renew_every_s < self.ttl_s - self.margin_s:
            raise ValueError(f"a lease must be renewed well within its time to live: {self}")


# The lease every lock of this process takes unless told otherwise (a process-wide setting: a test's
# short-lived promoters shorten it so that a killed one blocks the next for seconds, not a minute).
DEFAULT_LEASE = Lease()


class HeldLock:
    """A held ticket: renewed in the background until released; `check()` before each guarded write."""

    def __init__(self, registry: Registry, model: str, key: str, lease: Lease, granted_at: float) -> None:
        self.registry, self.model, self.key, self.lease = registry, model, key, lease
        self._valid_until = granted_at + lease.ttl_s - lease.margin_s
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{model}", daemon=True)
        self._renewer.start()

    def check(self) -> None:
        if time.monotonic() >= self._valid_until:
            raise LockLost(f"promotion lock of model {self.model!r} lost: its lease ({self.lease.ttl_s}s) ran out"
                           " before it could be renewed")

    def _renew(self) -> None:
        while not self._stop.wait(self.lease.renew_every_s):
            started = time.monotonic()
            if started >= self._valid_until:
                return
            try:
                self.registry.set_model_tag(self.model, self.key, _ticket(self.lease))
            except Exception as exc:
                log.warning("could not renew the promotion lock of %s: %s", self.model, exc)
                continue
            # A renewal that landed after the old lease lapsed may have resurrected a ticket another
            # process already deleted as expired: it does not count.
            if time.monotonic() < self._valid_until:
                self._valid_until = started + self.lease.ttl_s - self.lease.margin_s

    def release(self) -> None:
        self._stop.set()
        self._renewer.join()
        try:
            self.registry.delete_model_tag(self.model, self.key)
        except RegistryError as exc:
            with _abandoned_guard:
                _abandoned.add((self.registry.tracking_uri, self.model, self.key))
            log.warning("could not release the promotion lock of %s (%s); it expires within %ss",
                        self.model, exc, self.lease.ttl_s)


@contextmanager
def model_lock(registry: Registry, model: str, *, lease: Lease | None = None) -> Iterator[HeldLock]:
    """Hold the model's lock; raises `NotFound` for a model the registry does not have."""
    held = _acquire(registry, model, lease or DEFAULT_LEASE)
    try:
        yield held
    finally:
        held.release()


def _acquire(registry: Registry, model: str, lease: Lease) -> HeldLock:
    deadline = time.monotonic() + lease.wait_s
    pause = 0.02
    mine: str | None = None
    granted_at = 0.0
    while True:
        live = _live_tickets(registry, model)
        if mine is not None and mine not in live:
            mine = None  # deleted as expired by someone whose clock runs ahead: start over
        others = [key for key in live if key != mine]
        if mine is None and not others:
            mine = f"{LOCK_PREFIX}{time.time_ns():020d}.{uuid.uuid4().hex[:12]}"
            granted_at = time.monotonic()
            registry.set_model_tag(model, mine, _ticket(lease))
            continue
        if mine is not None and not others:
            return HeldLock(registry, model, mine, lease, granted_at)
        # A ticket kept waiting is never renewed: past one renewal period it is withdrawn and written
        # afresh, so a ticket found alone always has most of its lease ahead.
        if mine is not None and (mine > min(others) or time.monotonic() - granted_at > lease.renew_every_s):
            registry.delete_model_tag(model, mine)
            mine = None
        if time.monotonic() >= deadline:
            if mine is not None:
                registry.delete_model_tag(model, mine)
            raise LockTimeout(f"promotion lock of model {model!r} still held after {lease.wait_s}s"
                              f" (tickets {sorted(others)})")
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, 0.5)


def _live_tickets(registry: Registry, model: str) -> list[str]:
    """The model's unexpired tickets; expired ones and this process's abandoned ones are deleted."""
    now = time.time()
    live = []
    for key, value in registry.model(model).tags.items():
        if not key.startswith(LOCK_PREFIX):
            continue
        with _abandoned_guard:
            abandoned = (registry.tracking_uri, model, key) in _abandoned
        if abandoned or _expires(value) <= now:
            registry.delete_model_tag(model, key)
            with _abandoned_guard:
                _abandoned.discard((registry.tracking_uri, model, key))
            continue
        live.append(key)
    return live


def _ticket(lease: Lease) -> str:
    return json.dumps({"holder": f"{socket.gethostname()}:{os.getpid()}", "expires": time.time() + lease.ttl_s})


def _expires(value: str) -> float:
    try:
        return float(json.loads(value)["expires"])
    except (ValueError, KeyError, TypeError):
        return 0.0  # not a ticket this code wrote: treat it as expired rather than block forever
