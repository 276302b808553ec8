"""MovieLens import: both layouts, event-time order, the events' fields and the catalog."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.core.events import EventDecoder, parse_ts
from pipeline.offline.movielens import import_movielens, read_catalog, read_ratings

# (user, item, rating, unix time); out of time order, with ties at 881250949.
RATINGS = [
    (196, 242, 3.0, 881250949),
    (186, 302, 3.0, 891717742),
    (22, 377, 1.0, 878887116),
    (244, 51, 2.0, 880606923),
    (166, 346, 1.0, 881250949),
    (298, 474, 4.0, 884182806),
    (196, 302, 5.0, 881250949),
]
MOVIES = [
    (242, "Kolya (1996)", ["Comedy"]),
    (302, "L.A. Confidential (1997)", ["Crime", "Film-Noir", "Mystery", "Thriller"]),
    (377, "Heavyweights (1994)", []),
]
GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western"]  # fmt: skip


@pytest.fixture
def ml_100k(tmp_path: Path) -> Path:
    directory = tmp_path / "ml-100k"
    directory.mkdir()
    (directory / "u.data").write_text(
        "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in RATINGS)
    )
    lines = []
    for item, title, genres in MOVIES:
        flags = "|".join("1" if g in genres else "0" for g in GENRES_100K)
        lines.append(f"{item}|{title}|01-Jan-1997||http://example.org/{item}|{flags}\n")
    (directory / "u.item").write_bytes("".join(lines).encode("latin-1"))
    return directory


@pytest.fixture
def ml_latest(tmp_path: Path) -> Path:
    directory = tmp_path / "ml-latest-small"
    directory.mkdir()
    (directory / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in RATINGS)
    )
    (directory / "movies.csv").write_text(
        "movieId,title,genres\n"
        + "".join(
            f'{i},"{title}",{"|".join(genres) or "(no genres listed)"}\n'
            for i, title, genres in MOVIES
        )
    )
    return directory


def read_events(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("layout", ["ml_100k", "ml_latest"])
def test_each_rating_becomes_one_valid_play_event_in_stable_time_order(
    layout: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    directory = request.getfixturevalue(layout)
    out = tmp_path / "events.jsonl"
    assert import_movielens(directory, out) == len(RATINGS)
    decoder = EventDecoder(clock=lambda: 2e9)
    events = [decoder.decode(line) for line in out.read_bytes().splitlines()]
    expected = sorted(RATINGS, key=lambda rating: rating[3])  # sorted() is stable
    assert [(e.user_id, e.item_id, e.rating, e.ts_ms) for e in events] == [
        (f"ml-{u}", f"ml-{i}", r, t * 1000) for u, i, r, t in expected
    ]
    assert all(e.type == "play" and e.duration_s == 6000.0 for e in events)
    assert [e.position_s for e in events] == [r / 5 * 6000 for _, _, r, _ in expected]
    assert len({e.event_id for e in events}) == len(events)


def test_both_layouts_give_the_same_events(ml_100k: Path, ml_latest: Path, tmp_path: Path) -> None:
    import_movielens(ml_100k, tmp_path / "a.jsonl")
    import_movielens(ml_latest, tmp_path / "b.jsonl")
    assert read_events(tmp_path / "a.jsonl") == read_events(tmp_path / "b.jsonl")


def test_event_ids_are_deterministic(ml_latest: Path, tmp_path: Path) -> None:
    import_movielens(ml_latest, tmp_path / "a.jsonl")
    import_movielens(ml_latest, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    first = read_events(tmp_path / "a.jsonl")[0]
    assert first["event_id"] == "ml-22-377-878887116"
    assert parse_ts(first["ts"]) == 878887116000


def test_half_star_ratings_are_kept(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,2,3.5,10\n1,3,0.5,11\n"
    )
    ratings = read_ratings(tmp_path)
    assert ratings.ratings.tolist() == [3.5, 0.5]
    assert list(ratings.pairs()) == [
        ({"user": "ml-1", "item": "ml-2"}, 3.5),
        ({"user": "ml-1", "item": "ml-3"}, 0.5),
    ]


@pytest.mark.parametrize("layout", ["ml_100k", "ml_latest"])
def test_catalog_genres_are_lower_cased_and_none_listed_is_empty(
    layout: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    directory = request.getfixturevalue(layout)
    import_movielens(directory, tmp_path / "e.jsonl", catalog_out=tmp_path / "c.jsonl")
    catalog = read_events(tmp_path / "c.jsonl")
    assert catalog == list(read_catalog(directory))
    assert catalog == [
        {"item_id": "ml-242", "title": "Kolya (1996)", "genres": ["comedy"], "duration_s": 6000.0},
        {
            "item_id": "ml-302",
            "title": "L.A. Confidential (1997)",
            "genres": ["crime", "film-noir", "mystery", "thriller"],
            "duration_s": 6000.0,
        },
        {"item_id": "ml-377", "title": "Heavyweights (1994)", "genres": [], "duration_s": 6000.0},
    ]


def test_a_directory_without_ratings_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither u.data"):
        import_movielens(tmp_path, tmp_path / "e.jsonl")


def test_an_unexpected_ratings_header_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("user,item,rating,ts\n1,2,3,4\n")
    with pytest.raises(ValueError, match="unexpected header"):
        read_ratings(tmp_path)
