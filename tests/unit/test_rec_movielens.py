"""The MovieLens-100k loader: RecBole's copy and the GroupLens file format give the same
events and features, checked against the raw text read here independently."""

from __future__ import annotations

import csv
import datetime
import importlib.util
import os

import numpy as np
import pytest

import anychip as ac
from anychip.rec import movielens
from anychip.rec.movielens import GENRES, load_movielens

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("recbole") is None, reason="needs `pip install --no-deps recbole`"
)


def _atomic(name: str) -> list[list[str]]:
    path = os.path.join(movielens.recbole_path(), f"ml-100k.{name}")
    with open(path, encoding="latin-1") as f:
        return list(csv.reader(f, delimiter="\t"))[1:]


@pytest.fixture(scope="module")
def ml() -> movielens.MovieLens:
    return load_movielens()


def test_events_are_all_there_in_time_order(ml: movielens.MovieLens) -> None:
    rows = _atomic("inter")
    assert len(ml) == len(rows) == 100_000
    assert np.all(np.diff(ml.timestamp) >= 0)
    assert ml.label.sum() == sum(float(r[2]) >= 4 for r in rows)
    # the same multiset of (user, item, rating, time) events
    want = sorted((int(u), int(i), float(r), int(t)) for u, i, r, t in rows)
    got = sorted(zip(ml.user.tolist(), ml.item.tolist(), ml.rating.tolist(), ml.timestamp.tolist()))
    assert got == want


def test_features_of_one_event(ml: movielens.MovieLens) -> None:
    users = {int(r[0]): r for r in _atomic("user")}
    items = {int(r[0]): r for r in _atomic("item")}
    f = ml.features(np.array([0, 12345, 99999]))
    assert set(f) == set(movielens.FEATURES)
    for k, e in enumerate([0, 12345, 99999]):
        u, i = int(ml.user[e]), int(ml.item[e])
        assert f["user_id"].values[k] == u and f["item_id"].values[k] == i
        age = int(users[u][1])
        assert f["age"].values[k] == sum(age >= edge for edge in (18, 25, 35, 45, 50, 56))
        assert movielens.GENDERS[f["gender"].values[k]] == users[u][2]
        assert movielens.OCCUPATIONS[f["occupation"].values[k]] == users[u][3]
        genres = f["genres"].values[f["genres"].offsets[k] : f["genres"].offsets[k + 1]]
        assert [GENRES[g] for g in genres] == items[i][3].split()
        when = datetime.datetime.fromtimestamp(int(ml.timestamp[e]), datetime.UTC)
        assert f["hour"].values[k] == when.hour and f["weekday"].values[k] == when.weekday()
    # Toy Story (item 1): Animation, Children's, Comedy; released 1995
    toy = ml.side.genres.take(np.array([1]))
    assert [GENRES[g] for g in toy.values] == ["Animation", "Children's", "Comedy"]
    assert ml.side.year[1] == movielens.year_bucket(np.array(1995))
    assert ml.side.year[267] == 0  # the one item without a release date


def _write_grouplens(ml_dir: str) -> None:
    """Write RecBole's copy back out in the GroupLens layout (u.data, u.user, u.item)."""
    with open(os.path.join(ml_dir, "u.data"), "w") as f:
        for u, i, r, t in _atomic("inter"):
            f.write(f"{u}\t{i}\t{int(float(r))}\t{int(float(t))}\n")
    with open(os.path.join(ml_dir, "u.user"), "w") as f:
        f.writelines("|".join(r) + "\n" for r in _atomic("user"))
    with open(os.path.join(ml_dir, "u.item"), "w", encoding="latin-1") as f:
        for iid, title, year, genres in _atomic("item"):
            date = f"01-Jan-{year}" if year.isdigit() else ""
            flags = "|".join("1" if g in genres.split() else "0" for g in GENRES)
            f.write(f"{iid}|{title}|{date}||http://x|{flags}\n")


def test_grouplens_files_give_the_same_arrays(ml: movielens.MovieLens, tmp_path) -> None:
    _write_grouplens(str(tmp_path))
    gl = load_movielens(tmp_path)
    for name in ("user", "item", "rating", "timestamp", "label"):
        np.testing.assert_array_equal(getattr(gl, name), getattr(ml, name))
    a, b = gl.features(), ml.features()
    for name in movielens.FEATURES:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        np.testing.assert_array_equal(a[name].offsets, b[name].offsets, err_msg=name)


def test_missing_files_name_the_path(tmp_path) -> None:
    with pytest.raises(ac.ArgumentError, match=r"u\.data"):
        load_movielens(tmp_path)
