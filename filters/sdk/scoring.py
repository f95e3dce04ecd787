"""From a transaction's summed score to exactly one action, and the header that explains it."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from functools import cached_property

from pydantic import BaseModel, ConfigDict

from spamgate.filters.sdk.runner import ScoreEntry

__all__ = ["Action", "Thresholds", "choose_action", "explain", "spam_headers"]


class Action(str, enum.Enum):
    ACCEPT = "accept"
    ADD_HEADER = "add_header"
    QUARANTINE = "quarantine"
    TEMPFAIL = "tempfail"
    REJECT = "reject"


class Thresholds(BaseModel):
    """``[actions]``: a score at or above a threshold selects that action; None disables it.

    This is the config model itself: the engine's ``[actions]`` table is a Thresholds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    reject: float | None = 15.0
    tempfail: float | None = None
    quarantine: float | None = None
    add_header: float | None = 6.0

    # Sorted once: every message asks (the model is frozen, so the answer never changes).
    @cached_property
    def ordered(self) -> tuple[tuple[float, Action], ...]:
        """(threshold, action) pairs, highest threshold first."""
        pairs = [
            (self.reject, Action.REJECT),
            (self.tempfail, Action.TEMPFAIL),
            (self.quarantine, Action.QUARANTINE),
            (self.add_header, Action.ADD_HEADER),
        ]
        # Highest threshold first; at equal thresholds the harsher action wins.
        return tuple(sorted(((t, a) for t, a in pairs if t is not None), key=lambda p: -p[0]))

    @cached_property
    def required(self) -> float:
        """The score from which a message counts as spam (SpamAssassin's 'required')."""
        present = [t for t, _ in self.ordered]
        return min(present) if present else float("inf")


def choose_action(score: float, thresholds: Thresholds) -> Action:
    for threshold, action in thresholds.ordered:
        if score >= threshold:
            return action
    return Action.ACCEPT


def _fmt(x: float) -> str:
    return f"{x:.1f}" if abs(x - round(x, 1)) < 1e-9 else f"{x:.2f}"


def explain(entries: Sequence[ScoreEntry]) -> str:
    """``RBL_ZEN(4.0),SPAMD(3.3)``: every symbol that was seen, with what it counted."""
    parts = []
    for e in entries:
        tag = f"{e.symbol.name}({_fmt(e.score)})"
        if e.observed:
            tag = f"{e.symbol.name}(observe:{_fmt(e.symbol.score)})"
        parts.append(tag)
    return ",".join(parts) or "none"


def spam_headers(
    score: float, action: Action, entries: Sequence[ScoreEntry], thresholds: Thresholds
) -> list[tuple[str, str]]:
    """X-Spam-Flag/-Score/-Status in SpamAssassin's familiar format."""
    is_spam = action is not Action.ACCEPT
    required = thresholds.required
    req = _fmt(required) if required != float("inf") else "none"
    status = (
        f"{'Yes' if is_spam else 'No'}, score={_fmt(score)} required={req} "
        f"tests={explain(entries)} action={action.value}"
    )
    headers = [("X-Spam-Score", _fmt(score)), ("X-Spam-Status", status)]
    if is_spam:
        headers.insert(0, ("X-Spam-Flag", "YES"))
    return headers
