"""Fault injection: what goes wrong, on which endpoint, and when.

A rule targets one operation (``RunProject``, ``GetRunStatus``, ... or ``*`` for all) and either
plays a scripted sequence (one entry per matching request, ``None`` lets a request through; the
rule is spent when the sequence is) or strikes at a rate drawn from its own seeded RNG, so a run
of a test or a benchmark is reproducible.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hexdbt.errors import ConfigError

OPERATIONS = (
    "RunProject",
    "GetRunStatus",
    "GetProjectRuns",
    "CancelRun",
    "ListProjects",
    "GetProject",
    "GetQueriedTables",
    # The local dbt Cloud's Admin API (hexdbt.emulator.dbt_cloud).
    "DbtCloudListRuns",
    "DbtCloudGetRun",
    "DbtCloudGetArtifact",
    "DbtCloudGetJob",
    "DbtCloudGetEnvironment",
)
FAULT_KINDS = ("error", "drop", "slow", "lost_reset", "lost_timeout")
# A delay is real time a connection is held: a day is past any client's timeout, and bounded
# (a thread cannot wait 1e308 seconds: the wait would fail, and the connection with it).
MAX_DELAY_S = 86_400.0
ERROR_BODIES = ("json", "html", "empty")


class FaultError(ConfigError):
    """A fault description is malformed."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One thing that goes wrong with one request.

    - ``error``: answer ``status`` (500/502/503...) with a JSON, HTML or empty body; nothing runs.
      A 429 with ``delay_s`` sends it as its Retry-After (whole seconds).
    - ``drop``: close the connection before answering; nothing runs.
    - ``slow``: wait ``delay_s`` real seconds, then handle the request normally.
    - ``lost_reset``: handle the request (a run IS created), then reset the connection unanswered.
    - ``lost_timeout``: handle the request, then hold the answer ``delay_s`` real seconds, past
      the client's timeout.
    """

    kind: str
    status: int = 503
    body: str = "json"
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise FaultError(f"fault kind {self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if self.body not in ERROR_BODIES:
            raise FaultError(f"fault body {self.body!r} is not one of {', '.join(ERROR_BODIES)}")
        if not 400 <= self.status <= 599:
            raise FaultError(f"fault status {self.status} is not an HTTP error status (400-599)")
        if not 0 <= self.delay_s <= MAX_DELAY_S:  # NaN too
            raise FaultError(
                f"fault delay_s must be between 0 and {MAX_DELAY_S:.0f} seconds, got {self.delay_s}"
            )

    @property
    def handles_request(self) -> bool:
        """Whether the request is carried out (state changes) despite the fault."""
        return self.kind in ("slow", "lost_reset", "lost_timeout")

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"kind": self.kind}
        if self.kind == "error":
            described.update(status=self.status, body=self.body)
            if self.status == 429 and self.delay_s:
                described["delay_s"] = self.delay_s
        if self.kind in ("slow", "lost_timeout"):
            described["delay_s"] = self.delay_s
        return described

    @classmethod
    def coerce(cls, value: Fault | Mapping[str, Any] | str, where: str = "fault") -> Fault:
        if isinstance(value, Fault):
            return value
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, Mapping):
            raise FaultError(f"{where}: expected a mapping with a 'kind', got {value!r}")
        unknown = set(value) - {"kind", "status", "body", "delay_s"}
        if unknown:
            raise FaultError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        kind = value.get("kind")
        status = value.get("status", 503)
        body = value.get("body", "json")
        delay_s = value.get("delay_s", 30.0 if kind == "lost_timeout" else 0.0)
        if not isinstance(kind, str):
            raise FaultError(f"{where}.kind: expected one of {', '.join(FAULT_KINDS)}")
        if isinstance(status, bool) or not isinstance(status, int):
            raise FaultError(f"{where}.status: expected an HTTP status, got {status!r}")
        if not isinstance(body, str):
            raise FaultError(f"{where}.body: expected one of {', '.join(ERROR_BODIES)}")
        if isinstance(delay_s, bool) or not isinstance(delay_s, int | float):
            raise FaultError(f"{where}.delay_s: expected a number of seconds, got {delay_s!r}")
        try:
            return cls(kind=kind, status=status, body=body, delay_s=float(delay_s))
        except FaultError as exc:
            raise FaultError(f"{where}: {exc}") from exc


class FaultRule:
    """A scripted sequence or a seeded rate of faults for one operation (or ``*``)."""

    def __init__(
        self,
        operation: str,
        *,
        sequence: Sequence[Fault | None] | None = None,
        rate: float | None = None,
        fault: Fault | None = None,
        seed: int = 0,
    ) -> None:
        if operation != "*" and operation not in OPERATIONS:
            raise FaultError(
                f"fault endpoint {operation!r} is not one of {', '.join(OPERATIONS)} or '*'"
            )
        if (sequence is None) == (rate is None):
            raise FaultError("a fault rule needs either a sequence or a rate (not both)")
        if rate is not None:
            if not 0.0 <= rate <= 1.0:
                raise FaultError(f"fault rate must be between 0 and 1, got {rate}")
            if fault is None:
                raise FaultError("a fault rule with a rate needs a fault")
        self.operation = operation
        self.remaining: list[Fault | None] | None = None if sequence is None else list(sequence)
        self.rate = rate
        self.fault = fault
        self.seed = seed
        self._rng = random.Random(seed)

    def matches(self, operation: str) -> bool:
        return self.operation in ("*", operation)

    @property
    def spent(self) -> bool:
        return self.remaining is not None and not self.remaining

    def draw(self) -> Fault | None:
        if self.remaining is not None:
            return self.remaining.pop(0) if self.remaining else None
        assert self.rate is not None  # a rule is either a sequence or a rate
        return self.fault if self._rng.random() < self.rate else None

    def describe(self) -> dict[str, Any]:
        if self.remaining is not None:
            return {
                "endpoint": self.operation,
                "sequence": [None if f is None else f.describe() for f in self.remaining],
            }
        assert self.fault is not None
        return {
            "endpoint": self.operation,
            "rate": self.rate,
            "seed": self.seed,
            "fault": self.fault.describe(),
        }

    @classmethod
    def from_document(cls, document: Any) -> FaultRule:
        """A rule from the admin API's JSON: ``{endpoint, sequence}`` or ``{endpoint, rate, fault, seed}``."""
        if not isinstance(document, Mapping):
            raise FaultError("a fault rule must be a JSON object")
        unknown = set(document) - {"endpoint", "sequence", "rate", "fault", "seed"}
        if unknown:
            raise FaultError(f"fault rule: unknown key {sorted(unknown)[0]!r}")
        endpoint = document.get("endpoint", "*")
        if not isinstance(endpoint, str):
            raise FaultError("fault rule: endpoint must be a string")
        sequence_document = document.get("sequence")
        sequence: list[Fault | None] | None = None
        if sequence_document is not None:
            if not isinstance(sequence_document, list):
                raise FaultError("fault rule: sequence must be a list")
            sequence = [
                None
                if item is None or item == "ok"
                else Fault.coerce(item, f"fault rule: sequence[{i}]")
                for i, item in enumerate(sequence_document)
            ]
        rate = document.get("rate")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
            raise FaultError(f"fault rule: rate must be a number, got {rate!r}")
        seed = document.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise FaultError(f"fault rule: seed must be a whole number, got {seed!r}")
        fault_document = document.get("fault")
        fault = (
            None if fault_document is None else Fault.coerce(fault_document, "fault rule: fault")
        )
        return cls(
            endpoint,
            sequence=sequence,
            rate=None if rate is None else float(rate),
            fault=fault,
            seed=seed,
        )


class FaultBook:
    """The active rules. Scripted sequences take precedence over rates, oldest rule first."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def draw(self, operation: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.remaining is not None and rule.matches(operation) and not rule.spent:
                    return rule.draw()
            for rule in self._rules:
                if rule.rate is not None and rule.matches(operation):
                    fault = rule.draw()
                    if fault is not None:
                        return fault
            self._rules = [rule for rule in self._rules if not rule.spent]
            return None

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.describe() for rule in self._rules if not rule.spent]
