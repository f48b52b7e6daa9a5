import numpy as np
import pandas as pd
import pytest

from malle.io import cache


def test_building_is_all_or_nothing(tmp_path):
    target = tmp_path / "stage" / "abc"
    with pytest.raises(RuntimeError):
        with cache.building(target) as tmp:
            (tmp / "half.npy").write_bytes(b"partial")
            raise RuntimeError("crash mid-stage")
    assert not target.exists()
    assert not list((tmp_path / "stage").iterdir())  # the temp folder is gone too


def test_folder_without_done_mark_is_not_trusted_and_is_replaced(tmp_path):
    target = tmp_path / "abc"
    target.mkdir()
    (target / "stale.npy").write_bytes(b"junk")
    assert cache.problem_with(target) == "incomplete (no done.json)"
    meta = {}
    with cache.building(target, meta) as tmp:
        cache.write_npy(tmp / "x.npy", np.arange(3))
        meta["items"] = 3
    assert cache.problem_with(target) is None and not (target / "stale.npy").exists()
    assert cache.read_meta(target) == {"items": 3}
    record = cache.read_json(target / cache.DONE_MARK)
    assert record["artifacts"] == {"x.npy": [(target / "x.npy").stat().st_size, cache.file_digest(target / "x.npy")]}


def test_round_trips_without_pickle(tmp_path):
    cache.write_npy(tmp_path / "a.npy", np.eye(2, dtype=np.float32))
    assert (cache.read_npy(tmp_path / "a.npy") == np.eye(2)).all()
    with pytest.raises(ValueError):  # object arrays would need pickle: refused
        cache.write_npy(tmp_path / "b.npy", np.array([{"x": 1}], dtype=object))
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    for name in ("t.parquet", "t.csv"):
        cache.write_table(tmp_path / name, df)
        assert cache.read_table(tmp_path / name).equals(df)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_fingerprint_is_stable_and_sensitive():
    assert cache.fingerprint({"a": 1, "b": 2}) == cache.fingerprint({"b": 2, "a": 1})
    assert cache.fingerprint({"a": 1}) != cache.fingerprint({"a": 2})
