"""Artwork per user in the core: lists carry an artwork and its propensity; takes end shows.

A catalog of ten films, each with three artworks. A user's first play publishes a list whose
items carry ``artwork_id`` and ``propensity``; it is shown when the user's next session
starts (an hour later: the session gap is 30 minutes). A click on a shown item with its
artwork, then a minute of playback, is a take; a click without enough playback, or a show
whose window passes without a click, ends as a miss. A click naming an artwork its item
does not list is dead-lettered; a catalog record with malformed artworks is refused.
"""

from __future__ import annotations

import base64
import gc
from pathlib import Path

import orjson
import pytest

from pipeline.config import Settings
from pipeline.core import artwork as artwork_module
from pipeline.core.artwork import ArtworkTrial
from pipeline.core.events import Event, encode_event
from pipeline.core.processor import Processor
from pipeline.models import artwork_kernel
from pipeline.serde.schemas import validator

START_MS = 1_767_225_600_000
FILMS = [
    {
        "item_id": f"f{n}",
        "title": f"Film {n}",
        "genres": ["drama"],
        "duration_s": 3_600.0,
        "artworks": [{"artwork_id": f"f{n}-a{j}", "tags": [f"t{j}"]} for j in range(3)],
    }
    for n in range(10)
]


def processor(trials: list[ArtworkTrial] | None = None, **settings: object) -> Processor:
    p = Processor(
        Settings(reco_debounce_s=0, **settings),  # type: ignore[arg-type]
        clock=lambda: 4.1e9,
        artwork_sink=None if trials is None else trials.append,
    )
    p.load_catalog(FILMS)
    return p


class Feed:
    def __init__(self, p: Processor) -> None:
        self.p, self.offset, self.outputs = p, 0, []

    def send(self, kind: str, ts_s: float, device: str = "tv", **fields: object) -> list[dict]:
        event = Event(f"e{self.offset}", kind, "u1", START_MS + int(ts_s * 1000), device=device,
                      **fields)  # type: ignore[arg-type]  # fmt: skip
        self.p.process(encode_event(event), key=b"u1", partition=0, offset=self.offset)
        self.offset += 1
        outputs = self.p.take_outbox()
        self.outputs += outputs
        return [orjson.loads(o.value) for o in outputs if o.kind in ("personalization", "dlq")]


LATER = 7_200  # seconds: the next session (the first play's session ended at its end + 30 min)


def first_list(feed: Feed) -> dict:
    [listed] = feed.send("play", 0, item_id="f0", position_s=0.0, duration_s=60.0)
    feed.send("pause", 60, item_id="f0", position_s=60.0)
    return listed


def test_each_listed_item_carries_its_artwork_and_propensity_valid_against_the_schema() -> None:
    listed = first_list(Feed(processor()))
    assert validator("personalization").is_valid(listed)
    for item in listed["items"]:
        assert item["artwork_id"].startswith(item["item_id"] + "-a")
        assert 0 < item["propensity"] <= 1


def test_a_click_with_the_shown_artwork_then_a_minute_of_play_is_a_take() -> None:
    trials: list[ArtworkTrial] = []
    feed = Feed(processor(trials))
    listed = first_list(feed)
    target = listed["items"][2]
    feed.send("click", LATER, item_id=target["item_id"], surface="home", rank=2,
              artwork_id=target["artwork_id"])  # fmt: skip
    feed.send("play", LATER + 10, item_id=target["item_id"], position_s=0.0, duration_s=3600.0)
    assert feed.p.tally.artwork_takes["bandit"] == 0  # not yet a minute
    feed.send("pause", LATER + 100, item_id=target["item_id"], position_s=90.0)
    tally = feed.p.tally
    assert tally.artwork_takes == {"bandit": 1}
    # once the window passes, every other show ends as a miss: the shows are the items of
    # the list shown at the session start, the first list; the click's list was not shown
    other = Event("x", "search", "u2", START_MS + 2 * 86_400_000, query="q")
    feed.p.process(encode_event(other), key=b"u2", partition=0, offset=99)
    assert tally.artwork_shows["bandit"] == len(listed["items"]) == len(trials)
    [take] = [t for t in trials if t.reward == 1.0]
    assert (take.shown.item_id, take.shown.artwork_id) == (target["item_id"], target["artwork_id"])
    assert take.shown.propensity == target["propensity"]
    assert take.shown.context == ("tv",)  # the device the user watches on, no genre level


def test_a_click_without_enough_playback_in_time_is_a_miss() -> None:
    feed = Feed(processor())
    target = first_list(feed)["items"][0]
    feed.send("click", LATER, item_id=target["item_id"], surface="home",
              artwork_id=target["artwork_id"])  # fmt: skip
    feed.send("play", LATER + 10, item_id=target["item_id"], position_s=0.0, duration_s=3600.0)
    feed.send("pause", LATER + 30, item_id=target["item_id"], position_s=20.0)  # 20 s
    feed.send("play", LATER + 5_000, item_id=target["item_id"], position_s=20.0,
              duration_s=3600.0)  # fmt: skip
    feed.send("pause", LATER + 5_200, item_id=target["item_id"], position_s=220.0)  # too late
    assert feed.p.tally.artwork_takes["bandit"] == 0


def test_a_list_is_shown_at_the_next_session_and_its_shows_end_as_misses_in_time() -> None:
    p = processor(artwork_show_window_s=3_600.0)
    feed = Feed(p)
    listed = first_list(feed)
    assert p.users["u1"].artwork is not None and not p.users["u1"].artwork.shown
    feed.send("search", LATER, query="q")  # the next session: the list is shown now
    assert len(p.users["u1"].artwork.shown) == len(listed["items"])
    assert p.tally.artwork_shows["bandit"] == 0  # open: no outcome yet
    other = Event("x", "search", "u2", START_MS + (LATER + 3_600) * 1000, query="q")
    p.process(encode_event(other), key=b"u2", partition=0, offset=99)  # moves the watermark
    assert p.tally.artwork_shows["bandit"] == len(listed["items"])
    assert not p.users["u1"].artwork.shown


def test_a_list_replaced_within_the_session_was_never_shown() -> None:
    feed = Feed(processor())
    first = first_list(feed)
    [second] = feed.send("play", 120, item_id="f9", position_s=0.0, duration_s=600.0)
    feed.send("search", 600 + LATER, query="q")  # next session: the second list is shown
    shown = {(s.item_id, s.artwork_id) for s in feed.p.users["u1"].artwork.shown}
    assert shown == {(i["item_id"], i["artwork_id"]) for i in second["items"]}
    assert first != second


@pytest.mark.parametrize(
    ("levels", "first", "later"),
    [("device", ("tv",), ("tv",)), ("device_genre", ("tv", "tv/none"), ("tv", "tv/drama"))],
)
def test_the_context_of_a_list_is_the_device_of_most_sessions_not_that_of_its_event(
    levels: str, first: tuple[str, ...], later: tuple[str, ...]
) -> None:
    feed = Feed(processor(artwork_context=levels))
    first_list(feed)  # its session started before the user had artwork: not counted
    memory = feed.p.users["u1"].artwork
    assert memory.latest[0].context == first  # nothing counted: the event's device
    for n, device in enumerate(("tv", "tv", "mobile"), start=1):  # three more sessions
        ts, film = LATER * n, f"f{n}"  # a new film: a new list
        [_] = feed.send("play", ts, device, item_id=film, position_s=0.0, duration_s=60.0)
        feed.send("pause", ts + 60, device, item_id=film, position_s=60.0)
    assert memory.devices == pytest.approx({"tv": 1.71, "mobile": 1.0})
    assert memory.latest[0].shown_ms == START_MS + 3 * LATER * 1000  # the mobile session's
    assert memory.latest[0].context == later  # listed on mobile, seen as on tv
    stored = feed.p.users["u1"].to_bytes()
    restored = feed.p.decode_state("u1", stored).artwork
    assert restored is not None and restored.devices == memory.devices


def test_a_click_naming_an_artwork_its_item_does_not_list_is_dead_lettered() -> None:
    feed = Feed(processor())
    first_list(feed)
    [letter] = feed.send("click", LATER, item_id="f1", surface="home", artwork_id="f2-a0")
    assert letter["reason"] == "unknown_artwork" and "'f2-a0'" in letter["detail"]
    assert feed.p.tally.rejected == {"unknown_artwork": 1}
    # an item the catalog does not know is not judged: its click is applied
    assert all(
        "reason" not in out
        for out in feed.send("click", 200, item_id="new", surface="home", artwork_id="x")
    )


@pytest.mark.parametrize(
    ("artworks", "reason"),
    [
        ("poster.jpg", "wrong_type"),
        ([{"tags": ["dark"]}], "missing_field"),
        ([{"artwork_id": "a", "tags": "dark"}], "wrong_type"),
        ([{"artwork_id": "a"}, {"artwork_id": "a"}], "invalid_value"),
        ([{"artwork_id": ""}], "invalid_value"),
    ],
)
def test_catalog_records_with_malformed_artworks_are_refused(artworks: object, reason: str) -> None:
    p = processor()
    p.load_catalog([{"item_id": "bad", "artworks": artworks}, {"item_id": "good"}])
    assert p.tally.catalog_rejected == {reason: 1}
    assert "bad" not in p.catalog and "good" in p.catalog


def test_the_state_stores_the_open_shows_and_a_restored_state_goes_on_alike() -> None:
    straight, restarted = Feed(processor()), Feed(processor())
    listed = first_list(straight)
    first_list(restarted)
    data = restarted.p.users["u1"].to_bytes()
    assert "artwork" in orjson.loads(data)
    fresh = processor()
    fresh.install_models(0, restarted.p.models(0))
    fresh.adopt(fresh.decode_state("u1", data))
    restarted.p = fresh
    for feed in (straight, restarted):
        target = listed["items"][1]
        feed.send("click", LATER, item_id=target["item_id"], surface="home",
                  artwork_id=target["artwork_id"])  # fmt: skip
        feed.send("play", LATER + 10, item_id=target["item_id"], position_s=0.0,
                  duration_s=3600.0)  # fmt: skip
        feed.send("pause", LATER + 200, item_id=target["item_id"], position_s=180.0)
    assert fresh.tally.artwork_takes == straight.p.tally.artwork_takes == {"bandit": 1}
    assert fresh.users["u1"].to_bytes() == straight.p.users["u1"].to_bytes()


def test_a_state_read_back_holds_each_number_of_its_shows_once() -> None:
    """The shows of a list share their time, and their equal probabilities (~0.6 kB a state)."""
    feed = Feed(processor())
    first_list(feed)
    feed.send("search", LATER, query="q")  # the next session: the list is shown
    data = feed.p.users["u1"].to_bytes()
    memory = feed.p.decode_state("u1", data).artwork
    assert memory is not None and len(memory.shown) >= 5
    times = {id(shown.shown_ms) for shown in memory.shown}
    assert len({shown.shown_ms for shown in memory.shown}) == len(times) == 1
    reals = [
        x for shown in memory.shown for x in (shown.propensity, shown.p_popular, shown.p_bandit)
    ]
    assert len({id(x) for x in reals if x}) == len({x for x in reals if x}) < len(reals)
    assert feed.p.decode_state("u1", data).to_bytes() == data


def test_without_artworks_in_the_catalog_nothing_changes_in_lists_or_states() -> None:
    p = Processor(Settings(reco_debounce_s=0), clock=lambda: 4.1e9)
    p.load_catalog([{k: v for k, v in film.items() if k != "artworks"} for film in FILMS])
    feed = Feed(p)
    listed = first_list(feed)
    assert all("artwork_id" not in item for item in listed["items"])
    assert "artwork" not in orjson.loads(p.users["u1"].to_bytes())


def test_an_artwork_sticks_for_its_time_and_exploring_does_not_replace_it() -> None:
    p = processor(artwork_sticky_s=86_400.0, artwork_explore=0.5)
    feed = Feed(p)
    first_list(feed)
    kept, explored = 0, 0
    for n in range(1, 36):  # a session and a list every 40 minutes, within the sticky day
        before = dict(p.users["u1"].artwork.sticky)
        [listed] = feed.send("play", n * 2_400, item_id=f"f{n % 10}", position_s=0.0,
                             duration_s=60.0)  # fmt: skip
        after = p.users["u1"].artwork.sticky
        for entry in listed["items"]:
            item = entry["item_id"]
            if item in before:
                assert after[item] == before[item]  # exploring never replaces what sticks
                if entry["artwork_id"] == before[item][0]:
                    kept += 1
                else:  # shown otherwise only when exploring: ε / n with ε ≥ 0.5, n = 3
                    explored += 1
                    assert entry["propensity"] <= 1 / 3
    assert kept > explored > 0


def test_a_state_of_the_first_artwork_format_restores_and_its_click_can_still_be_taken() -> None:
    """Written by the first artwork commit: one ``shown_ms`` for all shows, no latest list."""
    fixture = orjson.loads((Path(__file__).parents[2] / "fixtures" / "artwork-state-first.json")
                           .read_bytes())  # fmt: skip
    p = processor()
    state = p.decode_state("u1", base64.b64decode(fixture["bytes"]))
    memory = state.artwork
    assert memory is not None and memory.latest == [] and len(memory.shown) == 9
    assert {shown.shown_ms for shown in memory.shown} == {START_MS + 100_000}  # its last list
    clicked = fixture["clicked"]
    assert memory.clicked is not None and memory.clicked.artwork_id == clicked["artwork_id"]
    p.adopt(state)
    feed = Feed(p)
    feed.offset = 2
    feed.send("play", 110, item_id=clicked["item_id"], position_s=0.0, duration_s=3600.0)
    feed.send("pause", 200, item_id=clicked["item_id"], position_s=90.0)
    assert p.tally.artwork_takes == {"bandit": 1}
    other = Event("x", "search", "u2", START_MS + 2 * 86_400_000, query="q")
    p.process(encode_event(other), key=b"u2", partition=0, offset=99)
    assert p.tally.artwork_shows == {"bandit": 10}  # the take and nine misses


def test_the_records_of_picks_and_shows_are_out_of_the_garbage_collectors_sight() -> None:
    """A user's latest picks and open shows are tuples of atoms, never traversed by a collection.

    Named tuples stay tracked by Python's collector however atomic their items; every full
    collection walked ~20 of them per user (``artwork_kernel.untracked``).
    """
    p = processor()
    feed = Feed(p)
    first_list(feed)
    memory = p.users["u1"].artwork
    assert memory is not None and memory.latest
    assert not any(gc.is_tracked(shown) for shown in memory.latest)
    feed.send("search", LATER, query="q")  # the next session: the list is shown
    assert memory.shown and not any(gc.is_tracked(shown) for shown in memory.shown)
    # only tuples that cannot be part of a reference cycle are accepted
    with pytest.raises(ValueError, match="not a tuple of atoms"):
        artwork_kernel.untracked(("f0", ["a list"]))
    with pytest.raises(ValueError, match="not a tuple of atoms"):
        artwork_kernel.untracked(["f0"])  # type: ignore[type-var]


def test_a_user_keeps_at_most_max_open_shows_the_oldest_ending_as_misses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(artwork_module, "MAX_OPEN", 4)
    trials: list[ArtworkTrial] = []
    p = processor(trials)
    feed = Feed(p)
    listed = first_list(feed)
    feed.send("search", LATER, query="q")  # the next session opens the list's ten shows
    memory = p.users["u1"].artwork
    assert memory is not None
    items = [item["item_id"] for item in listed["items"]]
    assert [shown.item_id for shown in memory.shown] == items[-4:]
    assert [trial.shown.item_id for trial in trials] == items[:-4]  # ended as misses
    assert all(trial.reward == 0.0 for trial in trials)
    assert p.tally.artwork_shows["bandit"] == len(items) - 4
