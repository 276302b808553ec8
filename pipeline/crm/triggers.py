"""CRM triggers: a message to a user when their behaviour first meets a rule; capped, opt-outs kept.

Four rules, each firing once when its criteria are first met (an intervention, not a
standing condition):

``win_back``
    a silent user (an inactivity re-score, ``OTTSCORE_CHURN_RESCORE_DAYS``) who is at
    risk: once per silence;
``at_risk``
    a user who became at risk at the end of a session;
``continue_series``
    a user silent since they left a title unfinished (between 10 % and 90 % of it), at
    the first re-score of the silence: once per title and silence;
``new_for_fans``
    at the end of a session, a title among the partition's most played of the last days
    (``OTTSCORE_CRM_TRENDING_TOP``), in a genre the user is a fan of (at least
    ``OTTSCORE_AUDIENCE_FAN_SHARE`` of their watch time) and that they have not finished:
    once per title.

**Risk with hysteresis.** A user enters risk when a churn score reaches the high band
(``OTTSCORE_RISK_HIGH``, or an experiment's threshold) and leaves it only when a score
falls below ``OTTSCORE_CRM_RISK_EXIT``: a score wavering around the threshold does not
fire ``at_risk`` again and again.

**Caps.** At most ``OTTSCORE_CRM_DAILY_CAP`` triggers per user per event-time (UTC) day,
and never the same type within ``OTTSCORE_CRM_TYPE_GAP_S``; a trigger over a cap is
suppressed (counted, not published). **Opt-outs** (:mod:`pipeline.crm.consent`): each
type has channels in order of preference; the first the user has not opted out of is the
record's ``channel``; none left: suppressed. **Holdout**: an experiment variant whose
``crm_holdout`` knob names the type records the trigger as ``withheld`` instead of
``sent``. A withheld trigger counts against the caps as a sent one does, so the two arms
of a holdout see the same triggers and differ only in what reached the user.

The ``trigger_id`` is a hash of the user, the type and the moment (or title) that caused
it: a replay of the same events, or the events re-read after a crash, give the same ids,
so a consumer de-duplicates by id.

Examples
--------
>>> import orjson
>>> from pipeline.core.state import UserState
>>> from pipeline.crm.consent import Consent
>>> triggers = Triggers(CrmRules(), Consent(), Tally())
>>> user = UserState.new("u1", partition=0, window_ms=1, max_ids=1)
>>> value = triggers.offer(user, Trigger("at_risk", "1000", 0.7, ("churn 0.70",)), at_ms=1000)
>>> record = orjson.loads(value)
>>> record["type"], record["status"], record["channel"], record["expires_at"]
('at_risk', 'sent', 'in_app', '1970-01-04T00:00:01.000Z')
>>> triggers.offer(user, Trigger("at_risk", "2000", 0.8, ()), at_ms=2000) is None  # within 72 h
True
>>> dict(triggers.tally.actions), dict(triggers.tally.actions_suppressed)
({('at_risk', 'sent'): 1}, {('at_risk', 'type_gap'): 1})
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from pipeline.core.features import DAY_MS
from pipeline.core.records import action_record
from pipeline.core.tally import Tally
from pipeline.crm.consent import Consent

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.core.state import UserState

__all__ = [
    "CHANNEL_PREFERENCE",
    "STATUSES",
    "SUPPRESS_REASONS",
    "TRIGGER_TYPES",
    "CrmRules",
    "Trigger",
    "Triggers",
    "UserCrm",
    "trigger_id",
]

TRIGGER_TYPES: Final = ("win_back", "at_risk", "continue_series", "new_for_fans")
"""Every trigger type, in the order they are offered when several fire at one moment."""

STATUSES: Final = ("sent", "withheld")
"""A published trigger went out (``sent``) or was held back by a holdout (``withheld``)."""

SUPPRESS_REASONS: Final = ("daily_cap", "type_gap", "opted_out")
"""Why a trigger was not published (the label of the suppression metric)."""

CHANNEL_PREFERENCE: Final[Mapping[str, tuple[str, ...]]] = {
    "win_back": ("email", "push"),
    "at_risk": ("in_app", "push", "email"),
    "continue_series": ("push", "in_app", "email"),
    "new_for_fans": ("push", "email", "in_app"),
}
"""Each type's channels, in order of preference (a lapsing user does not open the app)."""

UNFINISHED: Final = (0.1, 0.9)
"""Share of a title a playback must pass, and stay below, to leave it unfinished."""

MAX_OFFERED: Final = 64
"""Most titles remembered as offered to a user by ``new_for_fans``."""


@dataclass(frozen=True, slots=True)
class CrmRules:
    """The caps and thresholds of the triggers (from :class:`~pipeline.config.Settings`)."""

    types: frozenset[str] = frozenset(TRIGGER_TYPES)
    daily_cap: int = 2
    type_gap_ms: int = 3 * DAY_MS
    risk_exit: float = 0.45
    expiry_ms: int = 3 * DAY_MS
    trending_top: int = 20
    fan_share: float = 0.25

    @classmethod
    def of(cls, settings: Settings) -> CrmRules:
        """The rules ``settings`` set."""
        return cls(
            types=frozenset(settings.crm_triggers),
            daily_cap=settings.crm_daily_cap,
            type_gap_ms=int(settings.crm_type_gap_s * 1000),
            risk_exit=settings.crm_risk_exit,
            expiry_ms=int(settings.crm_expiry_s * 1000),
            trending_top=settings.crm_trending_top,
            fan_share=settings.audience_fan_share,
        )


class Trigger(NamedTuple):
    """A trigger whose criteria are met: its type, what caused it (for its id), why."""

    type: str
    cause: str
    score: float
    reasons: Sequence[str]
    item_id: str | None = None


def trigger_id(user_id: str, kind: str, cause: str) -> str:
    """The idempotency key of a trigger: 32 hex digits of user, type and cause.

    >>> trigger_id("u1", "win_back", "1767225600000") == trigger_id("u1", "win_back",
    ...                                                             "1767225600000")
    True
    """
    digest = hashlib.blake2b(f"{user_id}\x1f{kind}\x1f{cause}".encode(), digest_size=16)
    return digest.hexdigest()


@dataclass(slots=True)
class UserCrm:
    """A user's part of the triggers, stored in their state under ``crm``.

    ``at_risk``: inside the risk hysteresis; ``made``: ``[type, at_ms]`` of the triggers
    published (sent or withheld) within the caps' memory; ``won_back``: the last-seen time
    of the silence a ``win_back`` was made for; ``unfinished``: ``[item, share, at_ms]``
    of the title left unfinished last; ``continued``: the last-seen time of the silence a
    ``continue_series`` was made for; ``offered``: titles ``new_for_fans`` offered.
    """

    at_risk: bool = False
    made: list[list[Any]] = field(default_factory=list)
    won_back: int = 0
    unfinished: list[Any] | None = None
    continued: int = 0
    offered: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The stored form: named fields (``crm`` of the user's stored state)."""
        return {
            "at_risk": self.at_risk,
            "made": self.made,
            "won_back": self.won_back,
            "unfinished": self.unfinished,
            "continued": self.continued,
            "offered": self.offered,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> UserCrm:
        """Read what :meth:`to_json` stored (a field a later release adds is absent here)."""
        unfinished = obj.get("unfinished")
        return cls(
            at_risk=bool(obj.get("at_risk", False)),
            # lists of exactly their length, the type and titles one shared string each
            made=list([[sys.intern(str(kind)), int(at_ms)] for kind, at_ms in obj.get("made", ())]),
            won_back=int(obj.get("won_back", 0)),
            unfinished=None
            if unfinished is None
            else [str(unfinished[0]), float(unfinished[1]), int(unfinished[2])],
            continued=int(obj.get("continued", 0)),
            offered=list([sys.intern(str(item)) for item in obj.get("offered", ())]),
        )


class Triggers:
    """Decides and builds the triggers of a partition's users (see the module docstring)."""

    def __init__(self, rules: CrmRules, consent: Consent, tally: Tally) -> None:
        self.rules = rules
        self.consent = consent
        self.tally = tally

    def __bool__(self) -> bool:
        return bool(self.rules.types)

    # --- the rules ----------------------------------------------------------------------

    def on_risk(
        self,
        state: UserState,
        at_ms: int,
        probability: float,
        *,
        high: float,
        silence_days: int | None,
        experiments: Mapping[str, str] | None = None,
        holdout: Iterable[str] = (),
    ) -> list[bytes]:
        """A churn score: move the risk hysteresis; ``at_risk`` or ``win_back`` when due.

        ``silence_days`` is None for a score made at a session's end, else the days of
        silence of an inactivity re-score.
        """
        crm = state.crm
        was = crm is not None and crm.at_risk
        now = probability >= (min(self.rules.risk_exit, high) if was else high)
        if now != was:
            crm = self._crm(state)
            crm.at_risk = now
        if not now or crm is None:
            return []
        types = self.rules.types
        reason = f"churn probability {probability:.2f}"
        if silence_days is None:
            if was or "at_risk" not in types:
                return []
            trigger = Trigger("at_risk", str(at_ms), probability, (reason, "session ended"))
        else:
            if "win_back" not in types or crm.won_back == state.last_seen_ms:
                return []
            trigger = Trigger(
                "win_back",
                str(state.last_seen_ms),
                probability,
                (reason, f"silent {silence_days} days"),
            )
        record = self.offer(state, trigger, at_ms, experiments=experiments, holdout=holdout)
        if record is None:
            return []
        if trigger.type == "win_back":
            crm.won_back = state.last_seen_ms
        return [record]

    def on_playback_end(self, state: UserState, item_id: str, share: float, at_ms: int) -> None:
        """A playback ended at ``share`` of its title: remember it when left unfinished."""
        if "continue_series" not in self.rules.types:
            return
        crm = state.crm
        low, high = UNFINISHED
        if low <= share < high:
            self._crm(state).unfinished = [item_id, round(share, 4), at_ms]
        elif crm is not None and crm.unfinished is not None and crm.unfinished[0] == item_id:
            crm.unfinished = None  # finished (or barely started) since

    def on_silence(
        self,
        state: UserState,
        at_ms: int,
        *,
        silence_days: int,
        experiments: Mapping[str, str] | None = None,
        holdout: Iterable[str] = (),
    ) -> list[bytes]:
        """The first re-score of a silence: ``continue_series`` for a title left unfinished."""
        crm = state.crm
        if (
            crm is None
            or crm.unfinished is None
            or "continue_series" not in self.rules.types
            or crm.continued == state.last_seen_ms
        ):
            return []
        item_id, share, _ = crm.unfinished
        trigger = Trigger(
            "continue_series",
            f"{item_id}@{state.last_seen_ms}",
            share,
            (f"left at {share:.0%}", f"silent {silence_days} days"),
            item_id,
        )
        record = self.offer(state, trigger, at_ms, experiments=experiments, holdout=holdout)
        if record is None:
            return []
        crm.continued = state.last_seen_ms
        return [record]

    def on_session_end(
        self,
        state: UserState,
        at_ms: int,
        trending: Callable[[], Iterable[tuple[str, tuple[str, ...]]]],
        *,
        experiments: Mapping[str, str] | None = None,
        holdout: Iterable[str] = (),
    ) -> list[bytes]:
        """``new_for_fans``: the most played title of ``trending`` in a genre the user is a fan of.

        ``trending()`` gives ``(item_id, genres)``, the most played first; it is called only
        for a user who is a fan of some genre (most session ends need no ranking).
        """
        if "new_for_fans" not in self.rules.types:
            return []
        affinity = state.features.genre_affinity
        total = sum(affinity.values())
        if total <= 0:
            return []
        floor = self.rules.fan_share * total
        fan_of = {genre for genre, seconds in affinity.items() if seconds >= floor}
        if not fan_of:
            return []
        crm = state.crm
        offered = crm.offered if crm is not None else ()
        finished = state.finished
        for rank, (item_id, genres) in enumerate(trending(), 1):
            shared = fan_of.intersection(genres)
            if not shared or item_id in offered or item_id in finished:
                continue
            if item_id == state.current_item:
                continue
            genre = max(sorted(shared), key=affinity.__getitem__)
            trigger = Trigger(
                "new_for_fans",
                item_id,
                affinity[genre] / total,
                (f"fan of {genre}", f"#{rank} most played"),
                item_id,
            )
            record = self.offer(state, trigger, at_ms, experiments=experiments, holdout=holdout)
            if record is not None:
                crm = self._crm(state)
                crm.offered.append(item_id)
                del crm.offered[:-MAX_OFFERED]
                return [record]
            return []
        return []

    # --- caps, consent, holdout ---------------------------------------------------------

    def offer(
        self,
        state: UserState,
        trigger: Trigger,
        at_ms: int,
        *,
        experiments: Mapping[str, str] | None = None,
        holdout: Iterable[str] = (),
    ) -> bytes | None:
        """The action record of ``trigger`` at ``at_ms``, or None when a cap or opt-out stops it."""
        rules = self.rules
        kind = trigger.type
        crm = state.crm
        made: list[list[Any]] = []
        if crm is not None and crm.made:
            memory_ms = max(rules.type_gap_ms, DAY_MS)
            made = crm.made = [each for each in crm.made if each[1] > at_ms - memory_ms]
        day = at_ms // DAY_MS
        if sum(1 for _, made_ms in made if made_ms // DAY_MS == day) >= rules.daily_cap:
            self._suppress(kind, "daily_cap")
            return None
        if any(k == kind and at_ms - made_ms < rules.type_gap_ms for k, made_ms in made):
            self._suppress(kind, "type_gap")
            return None
        user_id = state.user_id
        channel = next(
            (c for c in CHANNEL_PREFERENCE[kind] if self.consent.allows(user_id, c)), None
        )
        if channel is None:
            self._suppress(kind, "opted_out")
            return None
        status = "withheld" if kind in holdout else "sent"
        self._crm(state).made.append([kind, at_ms])
        self.tally.actions[kind, status] += 1
        return action_record(
            user_id,
            at_ms,
            trigger_id=trigger_id(user_id, kind, trigger.cause),
            kind=kind,
            status=status,
            channel=channel,
            score=trigger.score,
            reasons=trigger.reasons,
            expires_ms=at_ms + rules.expiry_ms,
            item_id=trigger.item_id,
            experiments=experiments,
        )

    def _suppress(self, kind: str, reason: str) -> None:
        self.tally.actions_suppressed[kind, reason] += 1

    @staticmethod
    def _crm(state: UserState) -> UserCrm:
        if state.crm is None:
            state.crm = UserCrm()
        return state.crm
