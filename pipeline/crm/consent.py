"""Opt-outs: which channels each user refuses, from the compacted ``ott.consent`` topic.

A record (``schemas/consent.schema.json``, key = ``user_id``) names the channels a user
opted out of; the latest record of a user replaces the earlier ones, so opting back in is
a record with fewer channels (``[]``: every channel allowed again). ``"all"`` stands for
every channel. Records come from whoever may write the topic: :func:`consent_record`
refuses a malformed one with a machine-readable reason, and :meth:`Consent.load` counts
it and goes on, so one bad record never stops a worker. A user no record names has not
opted out of anything.

Examples
--------
>>> consent = Consent()
>>> consent.load([{"user_id": "u1", "opted_out": ["email"]}, b"{oops",
...               {"user_id": "u2", "opted_out": ["all"]}, {"user_id": "u3", "opted_out": "push"}])
>>> consent.allows("u1", "email"), consent.allows("u1", "push"), consent.allows("u2", "in_app")
(False, True, False)
>>> consent.allows("u9", "email"), dict(consent.take_refused())
(True, {'not_json': 1, 'wrong_type': 1})
>>> consent.load([{"user_id": "u1", "opted_out": []}])   # u1 opts back in
>>> consent.allows("u1", "email"), len(consent)
(True, 1)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Final

# the event decoder's field checks: one definition of a valid id
from pipeline.core.events import _Invalid, _json_type, _text

__all__ = ["CHANNELS", "CONSENT_REFUSE_REASONS", "Consent", "ConsentRefused", "consent_record"]

CHANNELS: Final = ("email", "push", "in_app")
"""The channels a trigger may go out on."""

CONSENT_REFUSE_REASONS: Final = ("not_json", "not_object", "missing_field", "wrong_type",
                                 "invalid_value")  # fmt: skip
"""Every :attr:`ConsentRefused.reason` (the label of the refusal metric)."""

log = logging.getLogger(__name__)

_USER_ID = _text(1, 128)
_ALL = "all"


class ConsentRefused(Exception):
    """A consent record that does not validate, and why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def consent_record(obj: object) -> tuple[str, frozenset[str]]:
    """``(user_id, channels opted out of)`` of one parsed record (``bytes``: did not parse).

    >>> user_id, channels = consent_record({"user_id": "u1", "opted_out": ["push", "email"]})
    >>> user_id, sorted(channels)
    ('u1', ['email', 'push'])
    >>> consent_record({"user_id": "u1", "opted_out": ["fax"]})
    Traceback (most recent call last):
    ...
    pipeline.crm.consent.ConsentRefused: invalid_value: opted_out: 'fax' is not a channel
    """
    if isinstance(obj, bytes | bytearray):
        raise ConsentRefused("not_json", "not a JSON value")
    if type(obj) is not dict:
        raise ConsentRefused("not_object", f"expected object, got {_json_type(obj)}")
    for field in ("user_id", "opted_out"):
        if field not in obj:
            raise ConsentRefused("missing_field", f"{field} is required")
    try:
        user_id = _USER_ID(obj["user_id"])
    except _Invalid as invalid:
        raise ConsentRefused(invalid.reason, f"user_id: {invalid.detail}") from None
    channels = obj["opted_out"]
    if type(channels) is not list:
        raise ConsentRefused("wrong_type", f"opted_out: expected array, got {_json_type(channels)}")
    refused: set[str] = set()
    for channel in channels:
        if channel == _ALL:
            refused.update(CHANNELS)
        elif channel in CHANNELS:
            refused.add(channel)
        elif type(channel) is not str:
            raise ConsentRefused("wrong_type", f"opted_out: {_json_type(channel)} in the array")
        else:
            raise ConsentRefused("invalid_value", f"opted_out: {channel[:64]!r} is not a channel")
    return user_id, frozenset(refused)


class Consent:
    """The channels each user opted out of (the latest record of each user)."""

    def __init__(self) -> None:
        self._opted_out: dict[str, frozenset[str]] = {}
        self._refused: Counter[str] = Counter()

    def __len__(self) -> int:
        """Users who opted out of at least one channel."""
        return len(self._opted_out)

    def load(self, records: Iterable[object]) -> None:
        """Adopt records in the order given; a malformed one is counted and skipped."""
        opted_out = self._opted_out
        for obj in records:
            try:
                user_id, channels = consent_record(obj)
            except ConsentRefused as refused:
                self._refused[refused.reason] += 1
                log.warning("consent record skipped: %s (%.200r)", refused, obj)
                continue
            if channels:
                opted_out[user_id] = channels
            else:
                opted_out.pop(user_id, None)

    def allows(self, user_id: str, channel: str) -> bool:
        """Whether ``user_id`` may be reached on ``channel``."""
        refused = self._opted_out.get(user_id)
        return refused is None or channel not in refused

    def take_refused(self) -> Counter[str]:
        """The records refused since the last call, by reason."""
        refused, self._refused = self._refused, Counter()
        return refused
