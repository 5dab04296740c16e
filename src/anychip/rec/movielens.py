"""MovieLens-100k as time-ordered events with categorical features, as numpy arrays.

Reads the official GroupLens files (`u.data`, `u.user`, `u.item`) from a folder, or the
same data as RecBole's atomic files (`ml-100k.{inter,user,item}`) from the installed
`recbole` package (`pip install --no-deps recbole==1.2.1`); both give the same arrays.
The example needs one of the two, so the doctests skip it.

>>> ml = load_movielens()             # doctest: +SKIP
>>> len(ml), ml.label.mean().round(3)  # doctest: +SKIP
(100000, 0.553)
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field

import numpy as np

from anychip.errors import ArgumentError

# The 19 genre flags of u.item, in the file's column order (RecBole spells them the same).
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
GENDERS = ("F", "M")
# The 21 occupations of u.occupation, sorted: bucket i is OCCUPATIONS[i].
OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment",
    "executive", "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none",
    "other", "programmer", "retired", "salesman", "scientist", "student", "technician",
    "writer",
)  # fmt: skip
# Age buckets as in MovieLens-1M: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
# Release-year buckets: 0 unknown, then decades up to the 1980s, then one per year 1990-1998.
YEAR_EDGES = (1930, 1940, 1950, 1960, 1970, 1980, 1990, *range(1991, 1999))
ZIP_CHARS = 2  # zip prefix: the first two characters (a US region; Canadian codes kept)
THRESHOLD = 4.0  # label = rating >= 4

# Categorical features and their number of buckets (ids run 0..cardinality-1).
SIDE_CARDINALITY = {
    "age": len(AGE_EDGES) + 1,
    "gender": len(GENDERS),
    "occupation": len(OCCUPATIONS),
    "zip": 100 + 1,  # two digits, or bucket 100 for a code that does not start with them
    "genres": len(GENRES),
    "year": len(YEAR_EDGES) + 2,  # unknown, before the first edge, then one per edge
    "hour": 24,
    "weekday": 7,
}
USER_FEATURES = ("age", "gender", "occupation", "zip")
ITEM_FEATURES = ("genres", "year")
FEATURES = ("user_id", "item_id", *USER_FEATURES, *ITEM_FEATURES, "hour", "weekday")


@dataclass(frozen=True)
class Jagged:
    """Variable-length lists: row r is values[offsets[r]:offsets[r + 1]] (int64)."""

    values: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> Jagged:
        """The lists of `rows` (an int array), in that order."""
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # position of each output value in `values`: its row's start plus its rank in the row
        starts = np.repeat(self.offsets[rows] - offsets[:-1], lengths)
        return Jagged(self.values[starts + np.arange(offsets[-1])], offsets)


@dataclass(frozen=True)
class SideFeatures:
    """Per-user and per-item features indexed by raw id (row 0 unused: ids start at 1).

    users[name][u] for name in USER_FEATURES; items["year"][i]; genres is jagged by item id.
    """

    users: dict[str, np.ndarray]
    year: np.ndarray
    genres: Jagged


@dataclass(frozen=True)
class MovieLens:
    """Events sorted by timestamp (stable) and the side features they join against."""

    user: np.ndarray  # (N,) int64 raw user id (1..943)
    item: np.ndarray  # (N,) int64 raw item id (1..1682)
    rating: np.ndarray  # (N,) float32, 1..5
    timestamp: np.ndarray  # (N,) int64 seconds since the epoch (UTC)
    side: SideFeatures
    source: str = ""
    label: np.ndarray = field(init=False)  # (N,) float32: rating >= 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", (self.rating >= THRESHOLD).astype(np.float32))

    def __len__(self) -> int:
        return len(self.user)

    def first(self, n: int) -> MovieLens:
        """The first `n` events (quick runs and tests); side features stay whole."""
        return MovieLens(
            self.user[:n],
            self.item[:n],
            self.rating[:n],
            self.timestamp[:n],
            self.side,
            self.source,
        )

    @property
    def num_users(self) -> int:
        return len(self.side.users["age"])  # max user id + 1

    @property
    def num_items(self) -> int:
        return len(self.side.year)  # max item id + 1

    def features(self, rows: np.ndarray | None = None) -> dict[str, Jagged]:
        """Each feature of events `rows` (default all) as jagged int64 ids; every feature
        but `genres` has one value per event. user_id and item_id are the raw ids."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, np.int64)
        user, item = self.user[rows], self.item[rows]
        out = {"user_id": _single(user), "item_id": _single(item)}
        for name in USER_FEATURES:
            out[name] = _single(self.side.users[name][user])
        out["genres"] = self.side.genres.take(item)
        out["year"] = _single(self.side.year[item])
        hour, weekday = time_features(self.timestamp[rows])
        out["hour"], out["weekday"] = _single(hour), _single(weekday)
        return out


def _single(ids: np.ndarray) -> Jagged:
    return Jagged(ids.astype(np.int64), np.arange(len(ids) + 1, dtype=np.int64))


def time_features(timestamp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hour 0-23, weekday 0=Monday..6) of UTC seconds."""
    days, secs = np.divmod(np.asarray(timestamp, np.int64), 86400)
    return secs // 3600, (days + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)


def age_bucket(age: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.array(AGE_EDGES), np.asarray(age), side="right").astype(np.int64)


def year_bucket(year: np.ndarray) -> np.ndarray:
    """0 for an unknown year (<= 0), 1 before 1930, then one bucket per YEAR_EDGES entry."""
    year = np.asarray(year)
    b = np.searchsorted(np.array(YEAR_EDGES), year, side="right") + 1
    return np.where(year > 0, b, 0).astype(np.int64)


def zip_bucket(code: str) -> int:
    head = code[:ZIP_CHARS]
    return int(head) if head.isdigit() else 100


def _code(table: tuple[str, ...], value: str, what: str, path: str) -> int:
    if value not in table:
        raise ArgumentError(f"movielens: unknown {what} {value!r} in {path}")
    return table.index(value)


# --- reading -----------------------------------------------------------------------
OFFICIAL = ("u.data", "u.user", "u.item")
ATOMIC = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")


def recbole_path() -> str:
    """The ml-100k folder inside the installed `recbole` package (not imported: only located)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise ArgumentError(
            "movielens: no path given and the recbole package is not installed "
            "(pip install --no-deps recbole==1.2.1, or pass the folder holding u.data)"
        )
    return os.path.join(next(iter(spec.submodule_search_locations)), "dataset_example", "ml-100k")


def load_movielens(path: str | os.PathLike[str] | None = None) -> MovieLens:
    """Load MovieLens-100k from `path` (a folder with the GroupLens files u.data, u.user,
    u.item, or with RecBole's ml-100k.{inter,user,item}); by default from recbole's copy."""
    root = os.fspath(path) if path is not None else recbole_path()
    have = set(os.listdir(root)) if os.path.isdir(root) else set()
    if set(OFFICIAL) <= have:
        events, users, items = _read_official(root)
    elif set(ATOMIC) <= have:
        events, users, items = _read_atomic(root)
    else:
        raise ArgumentError(
            f"movielens: {root!r} holds neither {', '.join(OFFICIAL)} (GroupLens) "
            f"nor {', '.join(ATOMIC)} (RecBole)"
        )
    user, item, rating, ts = events
    order = np.argsort(ts, kind="stable")  # time order; ties keep the file's order
    side = _side_features(users, items, root)
    return MovieLens(user[order], item[order], rating[order], ts[order], side, root)


Events = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Users = dict[int, tuple[int, str, str, str]]  # id -> (age, gender, occupation, zip)
Items = dict[int, tuple[int, list[str]]]  # id -> (release year or 0, genres)


def _events(rows: np.ndarray) -> Events:
    rows = rows.reshape(-1, 4)
    return (
        rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64),
        rows[:, 2].astype(np.float32), rows[:, 3].astype(np.int64),
    )  # fmt: skip


def _read_official(root: str) -> tuple[Events, Users, Items]:
    events = _events(np.loadtxt(os.path.join(root, "u.data"), dtype=np.int64, ndmin=2))
    users: Users = {}
    for line in _lines(os.path.join(root, "u.user")):
        uid, age, gender, occ, zipc = line.split("|")
        users[int(uid)] = (int(age), gender, occ, zipc)
    items: Items = {}
    for line in _lines(os.path.join(root, "u.item")):
        cols = line.split("|")
        date, flags = cols[2], cols[-len(GENRES) :]
        year = int(date[-4:]) if date[-4:].isdigit() else _title_year(cols[1])
        items[int(cols[0])] = (year, [g for g, f in zip(GENRES, flags) if f == "1"])
    return events, users, items


def _read_atomic(root: str) -> tuple[Events, Users, Items]:
    inter = os.path.join(root, "ml-100k.inter")
    events = _events(np.loadtxt(inter, dtype=np.float64, skiprows=1, ndmin=2))
    users: Users = {}
    for line in _lines(os.path.join(root, "ml-100k.user"))[1:]:
        uid, age, gender, occ, zipc = line.split("\t")
        users[int(uid)] = (int(age), gender, occ, zipc)
    items: Items = {}
    for line in _lines(os.path.join(root, "ml-100k.item"))[1:]:
        iid, title, year, genres = line.split("\t")
        # RecBole's conversion lost a few years (written 'unkonwn' or 'V'): read the title's
        year_n = int(year) if year.isdigit() else _title_year(title)
        items[int(iid)] = (year_n, genres.split())
    return events, users, items


def _lines(path: str) -> list[str]:
    with open(path, encoding="latin-1") as f:  # u.item has latin-1 titles
        return [line.rstrip("\n") for line in f if line.strip()]


def _title_year(title: str) -> int:
    m = re.search(r"\((\d{4})\)", title)
    return int(m.group(1)) if m else 0


def _side_features(users: Users, items: Items, root: str) -> SideFeatures:
    n_users, n_items = max(users) + 1, max(items) + 1
    cols = {name: np.zeros(n_users, np.int64) for name in USER_FEATURES}
    for uid, (age, gender, occ, zipc) in users.items():
        cols["age"][uid] = age_bucket(np.array(age))
        cols["gender"][uid] = _code(GENDERS, gender, "gender", root)
        cols["occupation"][uid] = _code(OCCUPATIONS, occ, "occupation", root)
        cols["zip"][uid] = zip_bucket(zipc)
    year = np.zeros(n_items, np.int64)
    lengths = np.zeros(n_items, np.int64)
    genre_ids: list[list[int]] = [[] for _ in range(n_items)]
    for iid, (y, genres) in items.items():
        year[iid] = year_bucket(np.array(y))
        genre_ids[iid] = [_code(GENRES, g, "genre", root) for g in genres]
        lengths[iid] = len(genre_ids[iid])
    offsets = np.zeros(n_items + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.array([g for ids in genre_ids for g in ids], np.int64)
    return SideFeatures(cols, year, Jagged(values, offsets))
