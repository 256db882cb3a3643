"""What a diagnosis (or a data audit) returns: findings with evidence, severity, confidence and remedies.

The JSON form (:meth:`Diagnosis.to_dict`) is a public, versioned contract; see ``docs/json-schema.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .codes import PROBLEMS, REMEDIES

JSON_SCHEMA_VERSION = 1


class Severity(str, Enum):
    INFO = "info"  # a healthy observation
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]

    @classmethod
    def parse(cls, value: str | Severity) -> Severity:
        if isinstance(value, Severity):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(f"severity must be one of info, warning, error; got {value!r}") from None


def parse_fail_on(value: str | Severity | None) -> Severity | None:
    """The ``--fail-on`` level: ``warning`` or ``error`` (``None`` means never fail)."""
    if value is None:
        return None
    if str(getattr(value, "value", value)) not in ("warning", "error"):
        from .errors import TrainmedicError

        raise TrainmedicError(f"`--fail-on` must be 'warning' or 'error'; got {value!r}")
    return Severity.parse(value)


@dataclass(frozen=True)
class RemedySuggestion:
    code: str
    title: str
    auto: bool
    why: str = ""

    @classmethod
    def of(cls, code: str, why: str = "") -> RemedySuggestion:
        r = REMEDIES[code]
        return cls(code=code, title=r.title, auto=r.auto, why=why)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "title": self.title, "auto": self.auto, "why": self.why}


def _jsonable(value: Any) -> Any:
    """Turn numpy/torch scalars and arrays into plain JSON values; NaN/Inf become strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _jsonable(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, Enum):
        return value.value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


@dataclass
class Finding:
    """One judgement: what was seen, where it began, how sure we are and what to do about it."""

    code: str
    severity: Severity
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remedies: list[RemedySuggestion] = field(default_factory=list)
    confidence: float = 1.0
    step: int | None = None
    epoch: int | None = None
    layer: str | None = None
    split: str | None = None
    source: str = "training"  # "training", "live", "audit", "import"
    title: str = ""

    def __post_init__(self) -> None:
        self.severity = Severity.parse(self.severity)
        if not self.title:
            p = PROBLEMS.get(self.code)
            self.title = p.title if p else self.code
        self.confidence = float(min(1.0, max(0.0, self.confidence)))

    @property
    def is_problem(self) -> bool:
        return self.severity is not Severity.INFO

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "title": self.title,
            "message": self.message,
            "confidence": round(self.confidence, 3),
            "evidence": _jsonable(self.evidence),
            "step": self.step,
            "epoch": self.epoch,
            "layer": self.layer,
            "split": self.split,
            "source": self.source,
            "remedies": [r.to_dict() for r in self.remedies],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            code=d["code"],
            severity=Severity.parse(d["severity"]),
            message=d.get("message", ""),
            evidence=dict(d.get("evidence") or {}),
            remedies=[
                RemedySuggestion(
                    r["code"], r.get("title", r["code"]), bool(r.get("auto", False)), r.get("why", "")
                )
                for r in d.get("remedies") or []
            ],
            confidence=float(d.get("confidence", 1.0)),
            step=d.get("step"),
            epoch=d.get("epoch"),
            layer=d.get("layer"),
            split=d.get("split"),
            source=d.get("source", "training"),
            title=d.get("title", ""),
        )

    def __str__(self) -> str:
        where = []
        if self.split:
            where.append(f"split={self.split}")
        if self.epoch is not None:
            where.append(f"epoch={self.epoch}")
        if self.step is not None:
            where.append(f"step={self.step}")
        if self.layer:
            where.append(f"layer={self.layer}")
        loc = f" ({', '.join(where)})" if where else ""
        return f"[{self.severity.value}] {self.code}{loc}: {self.message}"


@dataclass
class SkippedCheck:
    code: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "reason": self.reason}


@dataclass
class Diagnosis:
    """The result of :func:`trainmedic.diagnose` (and :func:`trainmedic.audit`)."""

    run: str | None
    findings: list[Finding] = field(default_factory=list)
    signals: dict[str, Any] = field(default_factory=dict)
    skipped: list[SkippedCheck] = field(default_factory=list)
    # set by diagnose(): the run holds no evidence to judge (no steps, evaluations or per-layer statistics
    # were stored, or every check was skipped) -- never "healthy", and a CI gate fails on it by default
    no_data: bool = False

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.is_problem]

    @property
    def healthy(self) -> bool:
        """No warning or error *and* there was evidence to judge (a run with no data is not healthy)."""
        return not self.problems and not self.no_data

    @property
    def verdict(self) -> str:
        """``"no_data"`` (nothing to judge), ``"healthy"``, or the worst severity (``"warning"``/``"error"``)."""
        if self.problems:
            return self.worst().value
        return "no_data" if self.no_data else "healthy"

    @property
    def summary(self) -> str:
        """The verdict in one line: ``no data: 15 checks skipped``, ``healthy: …``, ``2 warnings: …``."""
        if self.no_data and not self.problems:
            return f"no data: {len(self.skipped)} checks skipped"
        if not self.problems:
            return "healthy: no warnings or errors"
        n_err = sum(f.severity is Severity.ERROR for f in self.problems)
        n_warn = len(self.problems) - n_err
        parts = [f"{n} {w}{'s' * (n != 1)}" for n, w in ((n_err, "error"), (n_warn, "warning")) if n]
        out = " and ".join(parts) + ": " + ", ".join(dict.fromkeys(f.code for f in self.problems))
        return out + (f" (and no data: {len(self.skipped)} checks skipped)" if self.no_data else "")

    @property
    def codes(self) -> set[str]:
        return {f.code for f in self.problems}

    def has(self, code: str, at_least: str | Severity = Severity.WARNING) -> bool:
        level = Severity.parse(at_least).rank
        return any(f.code == code and f.severity.rank >= level for f in self.findings)

    def fails(self, fail_on: str | Severity | None, *, allow_no_data: bool = False) -> bool:
        """True when a finding is at least as severe as ``fail_on`` (``"warning"``/``"error"``): a CI gate.

        A run with no data fails the gate at any level (a gate must never pass on no evidence) unless
        ``allow_no_data``.
        """
        if fail_on is None:
            return False
        level = parse_fail_on(fail_on)
        if level is None:
            return False
        return self.worst().rank >= level.rank or (self.no_data and not allow_no_data)

    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), key=lambda s: s.rank, default=Severity.INFO)

    def by_code(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    def extend(self, findings: Iterable[Finding]) -> None:
        self.findings.extend(findings)
        self.sort()

    def sort(self) -> None:
        self.findings.sort(key=lambda f: (-f.severity.rank, -f.confidence, f.code))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": JSON_SCHEMA_VERSION,
            "run": self.run,
            "healthy": self.healthy,
            "verdict": self.verdict,
            "no_data": self.no_data,
            "worst": self.worst().value,
            "findings": [f.to_dict() for f in self.findings],
            "skipped": [s.to_dict() for s in self.skipped],
            "signals": _jsonable(self.signals),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Diagnosis:
        return cls(
            run=d.get("run"),
            findings=[Finding.from_dict(f) for f in d.get("findings", [])],
            signals=dict(d.get("signals") or {}),
            skipped=[SkippedCheck(s["code"], s["reason"]) for s in d.get("skipped", [])],
            no_data=bool(d.get("no_data", False)),
        )

    def __str__(self) -> str:
        if self.no_data and not self.problems:
            return f"{self.run or 'run'}: {self.summary}"
        if not self.findings:
            return f"{self.run or 'run'}: healthy, no findings"
        return "\n".join(str(f) for f in self.findings)
