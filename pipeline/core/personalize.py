"""Personalisation per event: prequential hit-rate, learning from choices, top-K lists.

:class:`Personalizer` is the part of the processor that turns a user's event into
implicit feedback for the partition's
:class:`~pipeline.models.reco.recommender.Recommender` (the choice, and the items of the
last list published to the user, passed over for it) and, when the user turns to another
item, into a fresh top-K list (at most one per ``reco_debounce_s`` of event time). Before
learning from a choice it scores the last list published for the user, and the trending
list of the same moment, against it: the prequential hit-rate@K of the model and of the
baseline.

The "next item" of the hit-rate is the first click or play of an item other than the one
the user was on: resuming the same film is not a choice, and a list computed after the
click on an item is not credited for the play that follows it.
"""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.core.artwork import Artworks
from pipeline.core.events import Event
from pipeline.core.records import personalization_record
from pipeline.core.state import Step, UserState
from pipeline.experiments.definition import Knobs
from pipeline.experiments.live import LiveExperiments
from pipeline.models.partition import PartitionModels
from pipeline.models.quality import TRENDING, Prequential

__all__ = ["Personalizer", "PERSONALIZED", "RECO_MODEL_VERSION"]

PERSONALIZED = "personalized"
RECO_MODEL_VERSION = "reco-ranker-1"
#: The ``model_version`` of a trending list shown instead (an experiment's ``list_source``).
TRENDING_VERSION = "trending-1"
_NO_KNOBS = Knobs()


class Personalizer:
    """Hit-rate, learning and lists for the events of any partition's users."""

    def __init__(
        self,
        settings: Settings,
        *,
        quality: Prequential,
        experiments: LiveExperiments | None = None,
        artworks: Artworks | None = None,
    ) -> None:
        self.k = settings.reco_k
        #: Picks the artwork of each listed item that has any (None: lists carry none).
        self.artworks = artworks
        self.quality = quality
        self.experiments = experiments if experiments is not None else LiveExperiments()
        self._debounce_ms = int(settings.reco_debounce_s * 1000)

    def on_event(
        self,
        state: UserState,
        models: PartitionModels,
        event: Event,
        step: Step,
        previous: str | None,
    ) -> bytes | None:
        """Learn from an item event; returns a personalisation record when one is due."""
        items = models.items
        ts = event.ts_ms
        if models.ratings is not None and event.rating is not None and event.item_id:
            found = items.find(event.item_id)
            genres = items.genres(found) if found is not None else ()
            predicted = models.ratings.predict_one(state.user_id, event.item_id, genres=genres)
            self.quality.rating(PERSONALIZED, predicted, event.rating, ts_ms=ts)
            models.ratings.learn_one(state.user_id, event.item_id, event.rating, genres=genres)
        recommender = models.recommender
        if step.choice is not None:
            if state.reco_at_ms:
                self.quality.next_item(PERSONALIZED, step.choice in state.reco_items, ts_ms=ts)
                self.quality.next_item(TRENDING, step.choice in state.trending_items, ts_ms=ts)
            recommender.choose(
                state.user_id,
                items.index(step.choice),
                previous=items.find(previous) if previous is not None else None,
                genres=state.features.genre_affinity,
                ts_ms=ts,
                shown=self._published(state, models, ts),
            )
        if step.playback_end is not None:
            ended, fraction = step.playback_end
            recommender.watched(state.user_id, items.index(ended), fraction)
        experiments = self.experiments
        debounce_ms = self._debounce_ms
        arms = None
        if state.experiments and experiments.sets_debounce:
            arms = experiments.arms(state.experiments, ts)
            debounce = experiments.knobs(arms).reco_debounce_s if arms else None
            if debounce is not None:
                debounce_ms = int(debounce * 1000)
        due = ts - state.reco_at_ms >= debounce_ms
        if due and (step.choice is not None or not state.reco_at_ms):
            if arms is None:
                arms = experiments.arms(state.experiments, ts) if state.experiments else {}
            knobs = experiments.knobs(arms) if arms else _NO_KNOBS
            return self._list(state, models, ts, arms, knobs, event.device)
        return None

    def _published(self, state: UserState, models: PartitionModels, ts_ms: int) -> list[int]:
        """The item indices of the last list published to the user (none before the first).

        The model's top ``reco_k``, or trending's when an experiment shows trending instead,
        cut to the size an experiment shows: the items the user passed over when choosing
        something else teach the taste model what they do not want.
        """
        if not state.reco_at_ms:
            return []
        knobs = _NO_KNOBS
        if state.experiments:
            arms = self.experiments.arms(state.experiments, ts_ms)
            knobs = self.experiments.knobs(arms) if arms else _NO_KNOBS
        ids = state.trending_items if knobs.list_source == "trending" else state.reco_items
        found = map(models.items.find, ids[: knobs.list_size or self.k])
        return [idx for idx in found if idx is not None]

    def _list(
        self,
        state: UserState,
        models: PartitionModels,
        ts_ms: int,
        arms: dict[str, str],
        knobs: Knobs,
        device: str | None = None,
    ) -> bytes:
        """Rank, keep the model's and trending's top-K for the hit-rate, publish the list.

        The prequential hit-rate always scores the model's top ``reco_k`` (and trending's):
        what an experiment shows a user (another size, the trending list) never changes
        what the model is measured on.
        """
        items = models.items
        current = items.find(state.current_item) if state.current_item else None
        exclude = [i for i in map(items.find, state.finished) if i is not None]
        if current is not None:
            exclude.append(current)
        recommender = models.recommender
        shown_k = knobs.list_size or self.k
        ranked = recommender.recommend(
            state.user_id,
            k=max(self.k, shown_k),
            previous=current,
            genres=state.features.genre_affinity,
            exclude=exclude,
        )
        trending = recommender.trending.top(max(self.k, shown_k), exclude=exclude)
        state.reco_at_ms = ts_ms
        state.reco_items = [r.item_id for r in ranked[: self.k]]
        state.trending_items = [items.ids[i] for i in trending[: self.k]]
        version = RECO_MODEL_VERSION
        if knobs.list_source == "trending":
            ranked, version = recommender.as_trending(trending), TRENDING_VERSION
        shown = ranked[:shown_k]
        artworks = self.artworks
        picked: list[tuple[str, float] | None] = []
        if artworks is not None and models.artwork is not None:
            picked = artworks.pick(
                state,
                models.artwork,
                [r.item_id for r in shown],
                ts_ms,
                knobs.artwork_policy,
                device,
                knobs.artwork_context,
            )
        return personalization_record(
            state.user_id,
            ts_ms,
            items=[(r.item_id, r.score, r.reason) for r in shown],
            model_version=version,
            segment=state.segment,
            cold_start=not recommender.taste.knows(state.user_id),
            experiments=arms,
            artworks=picked,
        )
