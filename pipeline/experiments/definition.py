"""Experiment definitions: the parser that enforces ``schemas/experiment.schema.json``.

:func:`parse_definition` turns a definition (JSON bytes or the decoded value) into a frozen
:class:`Experiment`, or raises :class:`DefinitionRefused` with a machine-readable reason
(one of :data:`REFUSAL_REASONS`). The published schema is checked by ``jsonschema`` (with
``date-time`` asserted), the very validator the schema's own tests use. Beyond the schema,
where JSON Schema cannot express a rule, it refuses repeated
variant names, a missing or repeated control, weights that do not sum to 1, churn thresholds
out of order and a stop that is not after the start. The registry
(:mod:`pipeline.experiments.registry`) then refuses changes to a running experiment.

Decisions the schema implies, and the parser follows:

- the control is the one variant with ``"control": true``;
- an integer field accepts a JSON number with a zero fraction (``5.0``), held as an ``int``;
  ``true`` and ``false`` are never numbers;
- ``start`` and ``stop`` are RFC 3339 date-times, held as epoch milliseconds (fractions of a
  millisecond truncated, so a stop less than a millisecond after the start is refused);
- unknown fields are refused everywhere (``unknown_knob`` among the knobs, ``schema``
  elsewhere): a misspelt ``population`` must not silently run an experiment on everyone;
- of several schema errors, the detail names the one ``jsonschema.exceptions.best_match``
  picks;
- a definition the schema accepts but that breaks several rules is refused for the first in
  the order of :data:`REFUSAL_REASONS`'s docstring.

Examples
--------
>>> experiment = parse_definition(
...     b'{"schema_version": 1, "id": "rail-size", "salt": "rail-size-2026-11",'
...     b' "start": "2026-11-23T00:00:00Z", "metrics": ["click_play_conversion"],'
...     b' "variants": [{"name": "control", "weight": 0.5, "control": true},'
...     b'              {"name": "short", "weight": 0.5, "knobs": {"list_size": 5.0}}]}'
... )
>>> experiment.control.name, experiment.variants[1].knobs  # doctest: +NORMALIZE_WHITESPACE
('control', Knobs(list_source=None, list_size=5, reco_debounce_s=None, churn_thresholds=None,
       artwork_policy=None, artwork_context=None, crm_holdout=None))
>>> try:
...     parse_definition(b'{"id": "rail-size"')
... except DefinitionRefused as refused:
...     print(refused.reason, "|", refused.detail)
not_json | unexpected end of data: line 1 column 19 (char 18)

"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from pipeline.core.events import parse_ts
from pipeline.serde.schemas import validator

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

__all__ = [
    "KNOBS",
    "LIST_SOURCES",
    "METRICS",
    "REFUSAL_REASONS",
    "SCHEMA_VERSION",
    "WEIGHTS_TOLERANCE",
    "ChurnThresholds",
    "DefinitionRefused",
    "Experiment",
    "Knobs",
    "Population",
    "Variant",
    "parse_definition",
]

REFUSAL_REASONS: Final = frozenset(
    {
        "not_json",
        "schema",
        "unknown_knob",
        "duplicate_variant",
        "no_control",
        "several_controls",
        "weights_sum",
        "thresholds_order",
        "stop_before_start",
        "duplicate_id",
        "salt_reused",
    }
)
"""Every :attr:`DefinitionRefused.reason`. ``not_json`` to ``stop_before_start`` come from
:func:`parse_definition` (``schema`` and ``unknown_knob`` when the schema refuses the
definition; the others, checked in the order listed here, when it accepts it); ``duplicate_id``
and ``salt_reused`` from :meth:`~pipeline.experiments.registry.ExperimentRegistry.register`."""

SCHEMA_VERSION: Final = 1
"""The only supported ``schema_version`` of definitions."""

KNOBS: Final = (
    "list_source", "list_size", "reco_debounce_s", "churn_thresholds", "artwork_policy",
    "artwork_context", "crm_holdout",
)  # fmt: skip
"""The settings a variant can override."""

LIST_SOURCES: Final = ("personalised", "trending")
"""Values of the ``list_source`` knob."""

METRICS: Final = (
    "click_play_conversion",
    "search_play_success",
    "completion_rate",
    "watch_seconds_per_user",
    "play_starts_per_user",
    "sessions_per_user",
    "return_7d",
)
"""The metrics an experiment can be judged on."""

WEIGHTS_TOLERANCE: Final = 1e-9
"""Largest distance of the sum of the weights from 1."""


class DefinitionRefused(ValueError):
    """A definition ottscore does not run.

    Attributes
    ----------
    reason
        One of :data:`REFUSAL_REASONS`.
    detail
        Human-readable explanation naming the field, e.g.
        ``"variants/1/weight: 'x' is not of type 'number'"``.

    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ChurnThresholds:
    """Churn probabilities from which the risk band is medium and high (0 < medium < high < 1)."""

    medium: float
    high: float


@dataclass(frozen=True, slots=True)
class Knobs:
    """The settings a variant overrides; ``None`` keeps the worker's setting."""

    list_source: str | None = None
    list_size: int | None = None
    reco_debounce_s: float | None = None
    churn_thresholds: ChurnThresholds | None = None
    artwork_policy: str | None = None
    #: The artwork bandit's context (``device`` or ``device_genre``: ``artwork_context``).
    artwork_context: str | None = None
    #: CRM trigger types withheld (recorded, not sent) for the variant's users.
    crm_holdout: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Variant:
    """One variant: its name, its share of the users, whether it is the control, its knobs."""

    name: str
    weight: float
    control: bool = False
    knobs: Knobs = field(default_factory=Knobs)


@dataclass(frozen=True, slots=True)
class Population:
    """Who takes part in an experiment; ``None`` filters nobody out.

    Attributes
    ----------
    segments
        Behavioural segments whose users take part.
    devices
        Device classes whose users take part.
    new_users
        ``True``: only users new when assigned; ``False``: only returning users.

    Examples
    --------
    >>> population = Population(segments=frozenset({0, 1}), new_users=False)
    >>> population.admits(segment=1, device="tv", new_user=False)
    True
    >>> population.admits(segment=None, device="tv", new_user=False)
    False

    """

    segments: frozenset[int] | None = None
    devices: frozenset[str] | None = None
    new_users: bool | None = None

    def admits(self, *, segment: int | None, device: str | None, new_user: bool) -> bool:
        """Whether a user passes every filter; an unknown segment or device passes none."""
        return (
            (self.segments is None or segment in self.segments)
            and (self.devices is None or device in self.devices)
            and (self.new_users is None or self.new_users == new_user)
        )


@dataclass(frozen=True, slots=True)
class Experiment:
    """A valid experiment definition.

    Attributes
    ----------
    id
        Unique id of the experiment.
    salt
        Seed of the assignment hash (:func:`~pipeline.experiments.assignment.assign`).
    variants
        The variants, in the order of their bucket ranges; exactly one is the control.
    start_ms, stop_ms
        Event time from which users are assigned and at which the experiment stops, in epoch
        milliseconds; ``stop_ms`` is ``None`` until a stop is sent.
    metrics
        The metrics the experiment is judged on (names from :data:`METRICS`).
    population
        Who takes part.

    """

    id: str
    salt: str
    variants: tuple[Variant, ...]
    start_ms: int
    stop_ms: int | None
    metrics: tuple[str, ...]
    population: Population = field(default_factory=Population)

    @property
    def control(self) -> Variant:
        """The control variant."""
        return next(variant for variant in self.variants if variant.control)

    def active_at(self, ts_ms: int) -> bool:
        """Whether the experiment runs at an event time: from start (inclusive) to stop.

        Examples
        --------
        >>> experiment = Experiment("x", "x", (), start_ms=1_000, stop_ms=2_000, metrics=())
        >>> experiment.active_at(999), experiment.active_at(1_000), experiment.active_at(2_000)
        (False, True, False)

        """
        return self.start_ms <= ts_ms and (self.stop_ms is None or ts_ms < self.stop_ms)


def parse_definition(raw: bytes | bytearray | memoryview | object) -> Experiment:
    """Parse and check an experiment definition.

    Parameters
    ----------
    raw
        JSON text (``bytes``, ``bytearray`` or ``memoryview``), or the value it decodes to
        (a ``dict``; anything else, a ``str`` included, is a value the schema refuses).

    Returns
    -------
    Experiment
        The definition, checked against ``schemas/experiment.schema.json`` and the rules
        beyond it (see the module docstring).

    Raises
    ------
    DefinitionRefused
        With ``reason`` ``not_json``, ``schema``, ``unknown_knob``, ``duplicate_variant``,
        ``no_control``, ``several_controls``, ``weights_sum``, ``thresholds_order`` or
        ``stop_before_start``. Nothing else is raised, whatever the input.

    Examples
    --------
    >>> definition = {
    ...     "schema_version": 1, "id": "rail-size", "salt": "rail-size-2026-11",
    ...     "start": "2026-11-23T00:00:00Z", "metrics": ["click_play_conversion"],
    ...     "variants": [{"name": "control", "weight": 0.5, "control": True},
    ...                  {"name": "short", "weight": 0.5, "knobs": {"list_size": 5}}],
    ... }
    >>> parse_definition(definition).start_ms
    1795392000000
    >>> definition["variants"][1]["weight"] = 0.4
    >>> def refusal(definition):
    ...     try:
    ...         parse_definition(definition)
    ...     except DefinitionRefused as refused:
    ...         return f"{refused.reason} | {refused.detail}"
    >>> refusal(definition)
    'weights_sum | variants: weights sum to 0.9, not 1'
    >>> definition["variants"][1] = {"name": "short", "weight": 0.5, "knobs": {"size": 5}}
    >>> refusal(definition)
    "unknown_knob | variants/1/knobs: Additional properties are not allowed ('size' was unexpected)"
    >>> refusal(b"[]")
    "schema | definition: [] is not of type 'object'"

    """
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise DefinitionRefused("not_json", str(error)) from None
    _check_json(raw, "")
    _check_schema(raw)
    assert isinstance(raw, dict)  # the schema says so
    experiment = _experiment(raw)
    _check_rules(experiment)
    return experiment


# --- the schema --------------------------------------------------------------------------------

#: Longest detail of a refusal: a schema error quotes the value, which may be anything.
_MAX_DETAIL_CHARS: Final = 300


@functools.cache
def _schema() -> Draft202012Validator:
    return validator("experiment")


def _check_json(value: object, path: str) -> None:
    """Refuse what no JSON text decodes to: NaN, infinities, tuples, non-text keys.

    NaN passes every bound of ``jsonschema`` (comparisons with NaN are false).
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DefinitionRefused("schema", f"{path or 'definition'}: key {key!r} not text")
            _check_json(item, f"{path}/{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}/{index}" if path else str(index))
    elif isinstance(value, float) and not math.isfinite(value):
        raise DefinitionRefused("schema", f"{path}: {value!r} is not a JSON number")
    elif value is not None and not isinstance(value, str | int | float):
        detail = f"{path or 'definition'}: a {type(value).__name__} is not a JSON value"
        raise DefinitionRefused("schema", detail)


def _check_schema(value: object) -> None:
    from jsonschema.exceptions import best_match

    error = best_match(_schema().iter_errors(value))
    if error is None:
        return
    path = "/".join(str(part) for part in error.absolute_path)
    reason = "schema"
    if error.validator == "additionalProperties" and path.endswith("knobs"):
        reason = "unknown_knob"
    detail = f"{path or 'definition'}: {error.message}"
    raise DefinitionRefused(reason, detail[:_MAX_DETAIL_CHARS])


def _ms(timestamp: str, name: str) -> int:
    """Epoch milliseconds of a ``date-time`` the schema accepted."""
    try:
        return parse_ts(timestamp)
    except ValueError as error:  # valid RFC 3339 that the event clock cannot hold
        raise DefinitionRefused("schema", f"{name}: {error}"[:_MAX_DETAIL_CHARS]) from None


def _experiment(obj: dict[str, Any]) -> Experiment:
    """The :class:`Experiment` of a definition the schema accepted."""
    population = obj.get("population", {})
    segments, devices = population.get("segments"), population.get("devices")
    return Experiment(
        id=obj["id"],
        salt=obj["salt"],
        variants=tuple(_variant(variant) for variant in obj["variants"]),
        start_ms=_ms(obj["start"], "start"),
        stop_ms=None if "stop" not in obj else _ms(obj["stop"], "stop"),
        metrics=tuple(obj["metrics"]),
        population=Population(
            segments=None if segments is None else frozenset(int(s) for s in segments),
            devices=None if devices is None else frozenset(devices),
            new_users=population.get("new_users"),
        ),
    )


def _variant(obj: dict[str, Any]) -> Variant:
    knobs = obj.get("knobs", {})
    size, thresholds = knobs.get("list_size"), knobs.get("churn_thresholds")
    debounce, holdout = knobs.get("reco_debounce_s"), knobs.get("crm_holdout")
    return Variant(
        name=obj["name"],
        weight=float(obj["weight"]),
        control=obj.get("control", False),
        knobs=Knobs(
            list_source=knobs.get("list_source"),
            list_size=None if size is None else int(size),
            reco_debounce_s=None if debounce is None else float(debounce),
            churn_thresholds=None
            if thresholds is None
            else ChurnThresholds(float(thresholds["medium"]), float(thresholds["high"])),
            artwork_policy=knobs.get("artwork_policy"),
            artwork_context=knobs.get("artwork_context"),
            crm_holdout=None if holdout is None else frozenset(holdout),
        ),
    )


# --- the rules beyond the schema ---------------------------------------------------------------


def _check_rules(experiment: Experiment) -> None:
    names = [variant.name for variant in experiment.variants]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DefinitionRefused("duplicate_variant", f"variants: {', '.join(repeated)} repeat")
    controls = [variant.name for variant in experiment.variants if variant.control]
    if not controls:
        raise DefinitionRefused("no_control", "variants: none has control: true")
    if len(controls) > 1:
        raise DefinitionRefused("several_controls", f"variants: {', '.join(controls)} are controls")
    total = math.fsum(variant.weight for variant in experiment.variants)
    if abs(total - 1) > WEIGHTS_TOLERANCE:
        raise DefinitionRefused("weights_sum", f"variants: weights sum to {total!r}, not 1")
    for index, variant in enumerate(experiment.variants):
        thresholds = variant.knobs.churn_thresholds
        if thresholds is not None and not thresholds.medium < thresholds.high:
            raise DefinitionRefused(
                "thresholds_order",
                f"variants/{index}/knobs/churn_thresholds: medium {thresholds.medium!r}"
                f" is not below high {thresholds.high!r}",
            )
    if experiment.stop_ms is not None and experiment.stop_ms <= experiment.start_ms:
        raise DefinitionRefused("stop_before_start", "stop: not after start")
