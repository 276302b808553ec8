"""The registry of experiments: one definition per id, and no change to a running one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

from pipeline.experiments.definition import DefinitionRefused, Experiment

__all__ = ["ExperimentRegistry"]


class ExperimentRegistry:
    """The experiments by id, refusing changes to a registered one but for its stop.

    A definition sent again unchanged is accepted (sends are retried); one with a new
    ``stop`` replaces the registered one; any other change would move users between
    variants or change what the experiment is judged on, and is refused as
    ``duplicate_id``. A new experiment with the salt of another is refused as
    ``salt_reused``: the two would split users identically instead of independently.

    Examples
    --------
    >>> registry = ExperimentRegistry()
    >>> first = Experiment("x", "salt-x", (), start_ms=0, stop_ms=None, metrics=())
    >>> registry.register(first)
    >>> registry.register(Experiment("x", "salt-x", (), start_ms=0, stop_ms=5, metrics=()))
    >>> registry["x"].stop_ms, len(registry)
    (5, 1)
    >>> try:
    ...     registry.register(Experiment("x", "salt-x", (), start_ms=1, stop_ms=5, metrics=()))
    ... except DefinitionRefused as refused:
    ...     print(refused)
    duplicate_id: x: differs from the registered experiment in start_ms
    >>> try:
    ...     registry.register(Experiment("y", "salt-x", (), start_ms=0, stop_ms=None, metrics=()))
    ... except DefinitionRefused as refused:
    ...     print(refused)
    salt_reused: y: salt of experiment x

    """

    def __init__(self) -> None:
        self._experiments: dict[str, Experiment] = {}
        self._ids_by_salt: dict[str, str] = {}

    def register(self, experiment: Experiment) -> None:
        """Add an experiment, or update the stop of a registered one.

        Raises
        ------
        DefinitionRefused
            ``duplicate_id`` or ``salt_reused`` (see the class docstring).

        """
        registered = self._experiments.get(experiment.id)
        if registered is not None:
            changed = [
                name
                for name in (each.name for each in fields(Experiment))
                if name != "stop_ms" and getattr(experiment, name) != getattr(registered, name)
            ]
            if changed:
                raise DefinitionRefused(
                    "duplicate_id",
                    f"{experiment.id}: differs from the registered experiment in "
                    + ", ".join(changed),
                )
        elif experiment.salt in self._ids_by_salt:
            raise DefinitionRefused(
                "salt_reused",
                f"{experiment.id}: salt of experiment {self._ids_by_salt[experiment.salt]}",
            )
        self._experiments[experiment.id] = experiment
        self._ids_by_salt[experiment.salt] = experiment.id

    def __contains__(self, experiment_id: object) -> bool:
        return experiment_id in self._experiments

    def __getitem__(self, experiment_id: str) -> Experiment:
        return self._experiments[experiment_id]

    def __iter__(self) -> Iterator[Experiment]:
        return iter(self._experiments.values())

    def __len__(self) -> int:
        return len(self._experiments)
