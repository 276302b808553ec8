"""A user's playhead, followed through their events: watch seconds, play starts, completions.

The one reading of playback that the experiment outcomes and the KPI windows share: a play
of an item the user is not already playing starts a playback; the playhead's advance
between two events of the same item (capped by the event time elapsed) is watched; a
playback completes, once, when its playhead reaches :data:`COMPLETION_FRACTION` of the
item's duration.

>>> from pipeline.core.events import Event
>>> head = Playhead()
>>> head.step(Event("p", "play", "u", 0, item_id="m", position_s=0.0, duration_s=100.0))
(0.0, 0, 1)
>>> head.step(Event("z", "pause", "u", 120_000, item_id="m", position_s=95.0))
(95.0, 1, 0)
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.events import Event

__all__ = ["COMPLETION_FRACTION", "Playhead"]

#: Share of an item's duration a playhead must reach for the playback to count as completed.
COMPLETION_FRACTION = 0.9


@dataclass(slots=True)
class Playhead:
    """Where a user's current playback stands."""

    playing: str | None = None
    position_s: float = 0.0
    since_ms: int = 0
    duration_s: float | None = None
    completed: bool = False

    def step(self, event: Event) -> tuple[float, int, int]:
        """``(watch seconds, completions, play starts)`` of the user's next event."""
        same = event.item_id is not None and event.item_id == self.playing
        watched = 0.0
        completed = started = 0
        if same and event.position_s is not None:
            elapsed_s = max(0.0, (event.ts_ms - self.since_ms) / 1000.0)
            watched = min(max(0.0, event.position_s - self.position_s), elapsed_s)
            completed = self._completes(event.position_s)
        if event.type == "play" and event.item_id is not None:
            if not same:
                started = 1
                self.completed = False
                self.duration_s = event.duration_s
            elif event.duration_s:
                self.duration_s = event.duration_s
            self.playing = event.item_id
            self.position_s = event.position_s or 0.0
            self.since_ms = event.ts_ms
            completed += self._completes(self.position_s)
        elif event.type == "pause" and same:
            self.position_s = event.position_s or self.position_s
            self.since_ms = event.ts_ms
            if self.completed:
                self.playing = None
        elif not same and event.type in ("click", "play"):
            self.playing = None
        return watched, completed, started

    def _completes(self, position_s: float) -> int:
        duration = self.duration_s
        if not self.completed and duration and position_s >= COMPLETION_FRACTION * duration:
            self.completed = True
            return 1
        return 0
