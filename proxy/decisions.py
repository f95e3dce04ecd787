"""The pure decisions of an SMTP transaction: no I/O, no metrics, no logging.

The transaction controller (``proxy.transaction``) asks these functions what to do and
then does it; keeping them pure is what makes every rule here trivially testable.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spamgate.filters.sdk.api import QUARANTINE_NOTE, Reply
from spamgate.filters.sdk.options import IPNetwork
from spamgate.filters.sdk.runner import PhaseResult, Scoreboard, ScoreEntry
from spamgate.filters.sdk.scoring import Action
from spamgate.proxy import replies

__all__ = [
    "AUTH_ROLES",
    "EndOfData",
    "Plan",
    "auth_required",
    "end_of_data",
    "filter_quarantine_request",
    "held_at_mail",
    "held_at_rcpt",
    "is_exempt",
    "reasons",
    "relay_denied",
    "spam_reject",
]

AUTH_ROLES = frozenset({"submission", "smtps"})


def auth_required(role: str, login: str | None) -> bool:
    """The engine's own rule, whatever filters are configured: submission is for users."""
    return role in AUTH_ROLES and login is None


RELAY_DENIED = "Relay access denied"


def _in_domains(domain: str, domains: Iterable[str]) -> bool:
    return any(domain == d or domain.endswith("." + d) for d in domains)


def relay_denied(
    role: str, login: str | None, rcpt: str, client: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    local_domains: Sequence[str], relay_domains: Sequence[str], relay_networks: Sequence[IPNetwork],
) -> Reply | None:
    """Postfix's reject_unauth_destination, in the engine: an mx listener takes mail for our
    domains from anyone, and mail for elsewhere only from logged-in users or relay_networks.

    The backend cannot be trusted to decide this: one that is not given the client's address
    (no XCLIENT) sees spamgate's own, which its mynetworks usually trusts. Without
    local_domains there is nothing to decide by (check-config warns), so the backend decides.
    """
    if role != "mx" or login is not None or not local_domains:
        return None
    domain = rcpt.rsplit("@", 1)[-1].strip().strip("[]").lower().rstrip(".") if "@" in rcpt else ""
    if domain and _in_domains(domain, (*local_domains, *relay_domains)):
        return None
    if client is not None and any(client in net for net in relay_networks):
        return None
    return Reply(554, "5.7.1", f"<{rcpt}>: {RELAY_DENIED}")


def held_at_mail(held: PhaseResult | None, defer_rejects: bool) -> Reply | None:
    """A held connect/HELO reject answers now, unless it is deferred to RCPT."""
    if held is None or defer_rejects:
        return None
    return held.reply


def is_exempt(rcpt: str, exempt: Iterable[str]) -> bool:
    """``postmaster`` matches any domain's postmaster; ``abuse@example.org`` only that address."""
    local = rcpt.rsplit("@", 1)[0].lower()
    return any(local == e.lower() or rcpt.lower() == e.lower() for e in exempt)


def held_at_rcpt(held: PhaseResult | None, rcpt: str, exempt: Iterable[str]) -> Reply | None:
    """A held connect/HELO reject applies to every recipient except the exempt ones."""
    if held is None or held.reply is None or is_exempt(rcpt, exempt):
        return None
    return held.reply


def filter_quarantine_request(notes: Mapping[str, Any], entries: Sequence[ScoreEntry]) -> Reply | None:
    """A filter's request to quarantine (see ``QUARANTINE_NOTE``), unless that filter only observes."""
    note = notes.get(QUARANTINE_NOTE)
    if not (isinstance(note, tuple) and len(note) == 2):
        return None
    name, reply = note
    if not isinstance(reply, Reply) or any(e.filter == name and e.observed for e in entries):
        return None
    return reply


def reasons(board: Scoreboard) -> list[str]:
    """Symbols that added to the score, biggest first."""
    return [e.symbol.name for e in sorted(board.entries, key=lambda e: -e.score) if e.score > 0]


def spam_reject(score: float, why: Sequence[str]) -> Reply:
    return Reply(550, "5.7.1", f"Message rejected as spam (score {score:.1f}: {', '.join(why[:3]) or 'score'})")


class EndOfData(str, enum.Enum):
    RELAY = "relay"
    QUARANTINE = "quarantine"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Plan:
    """What end of DATA does: relay, quarantine, or refuse with ``reply``.

    ``action`` is what the score chose (the quarantine records it); ``label`` is the
    transactions metric's action; ``why`` explains an unusual refusal in the log line.
    """

    kind: EndOfData
    action: Action
    label: str
    reply: Reply | None = None
    why: str = ""

    @property
    def summary(self) -> str:
        """The summary log line's action for a refusal."""
        return f"{self.label} ({self.why})" if self.why else self.label


def end_of_data(
    score: float,
    action: Action,
    why: Sequence[str],
    filter_hold: Reply | None,
    *,
    quarantine_rejects: bool,
    can_quarantine: bool,
) -> Plan:
    """The one thing to do with a message that passed every filter, from its score's action."""
    if filter_hold is not None:
        if can_quarantine:
            return Plan(EndOfData.QUARANTINE, Action.QUARANTINE, "quarantine")
        return Plan(EndOfData.REFUSE, action, "reject", filter_hold, "no quarantine_dir for a filter's quarantine")
    wants_quarantine = action is Action.QUARANTINE or (action is Action.REJECT and quarantine_rejects)
    if wants_quarantine and can_quarantine:
        return Plan(EndOfData.QUARANTINE, action, "quarantine")
    if action is Action.REJECT:
        return Plan(EndOfData.REFUSE, action, "reject", spam_reject(score, why))
    if action is Action.TEMPFAIL:
        return Plan(EndOfData.REFUSE, action, "tempfail", replies.SPAM_TEMPFAIL)
    # accept, add_header, or quarantine with nowhere to put it: relay, labelled by the action.
    return Plan(EndOfData.RELAY, action, action.value)
