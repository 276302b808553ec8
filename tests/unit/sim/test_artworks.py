"""The closed loop's artworks: hidden appeal, clicks that carry the artwork, takes and regret."""

from __future__ import annotations

import dataclasses

from pipeline.config import Settings
from pipeline.core.processor import Processor
from pipeline.sim.artworks import TAGS, take_outcomes, wrong_tag_shares
from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig, Message, Slice
from pipeline.sim.home_screen import PublishedList
from pipeline.sim.list_policies import ProcessorLists

CONFIG = ClosedLoopConfig(users=150, days=14, seed=4, artworks=(4, 10))


def test_each_title_has_four_to_ten_artworks_and_each_viewer_prefers_their_device_tag() -> None:
    loop = ClosedLoop(CONFIG)
    world = loop.artworks
    assert world is not None
    assert all(4 <= len(arts) <= 10 for arts in world.of_title)
    assert len(set(world.by_device.values())) == len(world.by_device)  # a tag per device
    for viewer in range(20):
        device_tag = world.by_device[loop.profiles[viewer].device]
        for artwork_id, tag, _ in world.of_title[viewer]:
            appeal = world.appeal(viewer, artwork_id)
            assert appeal == 1.0 if tag == device_tag else 0.3 <= appeal <= 0.6
    records = loop.catalog_records()
    assert {art["tags"][0] for r in records for art in r["artworks"]} <= set(TAGS)
    assert "artworks" not in loop.catalog.records()[0]  # the open loop's catalog is unchanged


def test_clicks_carry_the_artwork_shown_and_the_core_never_refuses_them() -> None:
    loop = ClosedLoop(CONFIG)
    processor = Processor(Settings(), clock=lambda: 4.1e9)
    lists = ProcessorLists(processor, catalog=loop.catalog_records())
    run = loop.run(lists)
    clicks = [e for e in run.events if e.type == "click" and e.artwork_id is not None]
    assert clicks and all(e.surface == "for_you" for e in clicks)
    assert not processor.tally.rejected
    assert sum(processor.tally.artwork_takes.values()) > 0


def test_an_oracle_of_the_viewers_taste_has_no_regret_and_random_artworks_have_some() -> None:
    loop = ClosedLoop(CONFIG)
    world = loop.artworks
    assert world is not None
    user_ids = [p.user_id for p in loop.profiles]
    row = {user: index for index, user in enumerate(user_ids)}

    def run(pick: str) -> object:
        processor = Processor(Settings(artwork_policy="random"), clock=lambda: 4.1e9)
        inner = ProcessorLists(processor, catalog=loop.catalog_records())

        def policy(piece: Slice) -> list[PublishedList | Message]:
            published = inner(piece)
            if pick == "random":
                return published
            best = []
            for listed in published:
                if isinstance(listed, Message):
                    best.append(listed)
                    continue
                viewer = row[listed.user_id]
                arts = []
                for item_id in listed.item_ids:
                    title = world.of_title[world._title_of[item_id]]
                    arts.append(max(title, key=lambda a: world.appeal(viewer, a[0]))[0])
                best.append(dataclasses.replace(listed, artwork_ids=tuple(arts)))
            return best

        closed = loop.run(policy)
        return take_outcomes(closed, world, user_ids), wrong_tag_shares(closed, world, user_ids)

    (oracle, oracle_wrong), (random, random_wrong) = run("oracle"), run("random")
    assert oracle.regret[-1] == 0.0
    assert random.regret[-1] > 0.1 * len(random.regret)
    assert oracle.take_rate > random.take_rate
    # every kind of viewer is shown their tag by the oracle wherever a title has it ...
    assert oracle_wrong and all(share == 0.0 for _, share in oracle_wrong.values())
    # ... and mostly another by chance (a title has 4 to 10 artworks, often one of a tag)
    assert all(0.5 < share < 1.0 for _, share in random_wrong.values())
    assert oracle_wrong.keys() == random_wrong.keys() == set(world.by_device)
    assert sum(n for n, _ in oracle_wrong.values()) < oracle.shows.sum()  # some lack the tag
