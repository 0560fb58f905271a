"""The simulator's mutable state: the current profile, its clock, the ledger and stored files."""

from __future__ import annotations

import math
import random
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from simulator.images import ImageSpec
from simulator.ledger import CallRecord, Ledger
from simulator.outcomes import FAST_ERROR_FRACTION, FAST_KINDS, Kind, forced_outcome
from simulator.profile import Outage, Profile

MAX_STORED_FILES = 20_000


@dataclass(frozen=True)
class Decision:
    kind: Kind
    detail: str | None
    latency_s: float


@dataclass(frozen=True)
class Call:
    """A call in flight; it finishes in the ledger it started in, even after a reset."""

    ledger: Ledger
    record: CallRecord
    decision: Decision

    def finish(self, http_status: int | None) -> None:
        self.ledger.finish(self.record, http_status)


class FileStore:
    """Downloadable images by id. Stores the recipe, not the bytes: rendering is cached."""

    def __init__(self) -> None:
        self._specs: OrderedDict[str, ImageSpec] = OrderedDict()

    def put(self, spec: ImageSpec) -> str:
        file_id = uuid.uuid4().hex
        self._specs[file_id] = spec
        while len(self._specs) > MAX_STORED_FILES:
            self._specs.popitem(last=False)
        return file_id

    def get(self, file_id: str) -> ImageSpec | None:
        return self._specs.get(file_id)


class SimState:
    def __init__(self, profile: Profile, *, seed: int | None = None) -> None:
        self.startup_profile = profile
        self.rng = random.Random(seed)
        self.signing_key = secrets.token_bytes(16)
        self.files = FileStore()
        self.profile = profile
        self.profile_set_at = time.monotonic()
        self.ledger = Ledger()

    def reset(self) -> None:
        self.set_profile(self.startup_profile)
        self.ledger = Ledger()

    def set_profile(self, profile: Profile) -> None:
        self.profile = profile
        self.profile_set_at = time.monotonic()

    def elapsed_s(self) -> float:
        """Seconds on the outage clock (since the profile was last set)."""
        return time.monotonic() - self.profile_set_at

    def add_outage(self, model: str, outage: Outage) -> Outage:
        """Adds an outage given relative to now; returns it on the profile's clock."""
        now = self.elapsed_s()
        shifted = Outage(now + outage.start_s, now + outage.end_s, outage.kind, outage.rate)
        self.profile = self.profile.with_outage(model, shifted)
        return shifted

    def decide(
        self, model: str, prompt: str, supported: frozenset[Kind], forced: Kind | None = None
    ) -> Decision:
        """Outcome and latency for one call: ``forced`` (the request itself is bad), then the
        prompt marker, then an active outage, then the error mix."""
        entry = self.profile.for_model(model)
        marker = forced_outcome(prompt)
        if forced is not None:
            kind, detail = forced, None
        elif marker is not None:
            kind, detail = marker.kind, marker.detail
        else:
            kind, detail = self._roll(model), None
        if kind not in supported:
            kind = Kind.OK
        if kind is Kind.NO_IMAGE and detail is None:
            detail = entry.no_image_reason
        base = entry.latency.median_s * math.exp(entry.latency.sigma * self.rng.gauss(0.0, 1.0))
        latency_s = base * self.profile.latency_scale
        if kind in FAST_KINDS:
            latency_s *= FAST_ERROR_FRACTION
        return Decision(kind, detail, latency_s)

    def _roll(self, model: str) -> Kind:
        entry = self.profile.for_model(model)
        elapsed_s = self.elapsed_s()
        for outage in entry.outages:
            if outage.active(elapsed_s) and self.rng.random() < outage.rate:
                return outage.kind
        draw = self.rng.random()
        for kind, probability in entry.errors.items():
            if draw < probability:
                return kind
            draw -= probability
        return Kind.OK

    def start_call(self, vendor: str, model: str, prompt: str, decision: Decision) -> Call:
        ledger = self.ledger
        return Call(ledger, ledger.start(vendor, model, prompt, decision.kind.value), decision)
