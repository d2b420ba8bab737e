"""Tests of smpstats.io: Parquet round trip, metadata, atomic writes, clear errors."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smpstats.errors import DataFileError, InputError
from smpstats.inputs import SmoothInputs
from smpstats.io import METADATA_KEY, atomic_write, load_samples, package_version, read_metadata, save_samples
from smpstats.simulation import simulate


def full(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.fixture(scope="module")
def samples():
    return simulate("conv1d(out_channels=2, kernel_size=3) | relu", 2, seed=3, input_shape=(2, 10), n_points=64,
                    path=SmoothInputs(length_scale=0.2))


@pytest.fixture
def big_frame():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.standard_normal(20_000), "k": np.arange(20_000)})
    df.attrs["smpstats"] = {"spec": "relu", "seed": 1}
    return df


def test_round_trip_keeps_table_dtypes_and_metadata(tmp_path, samples):
    path = save_samples(samples, tmp_path / "s.parquet", metadata={"note": "pilot", "grid": (1, 2)})
    assert path == tmp_path / "s.parquet"
    back = load_samples(str(path))
    pd.testing.assert_frame_equal(back, samples, check_exact=True)
    assert back["fan_in"].dtype == "Int64" and back["piecewise_linear"].dtype == "boolean"
    meta = back.attrs["smpstats"]
    original = samples.attrs["smpstats"]
    assert meta["spec"] == original["spec"] == "conv1d(out_channels=2, kernel_size=3) | relu"
    assert meta["seed"] == 3 and meta["input_shape"] == [2, 10] and meta["path"]["name"] == "smooth"
    assert meta["package_version"] == original["package_version"] == package_version()
    assert meta["created"] == original["created"]
    assert meta["note"] == "pilot" and meta["grid"] == [1, 2]
    assert meta["format"] == "smpstats.samples" and meta["format_version"] == 1
    assert read_metadata(path) == meta
    # the caller's frame is not changed
    assert "note" not in samples.attrs["smpstats"]


def test_metadata_lives_in_the_parquet_schema(tmp_path, big_frame):
    path = save_samples(big_frame, tmp_path / "b.parquet")
    raw = pq.read_schema(path).metadata[METADATA_KEY]
    meta = json.loads(raw)
    assert meta["spec"] == "relu" and meta["seed"] == 1 and "created" in meta and "package_version" in meta
    # plain pandas can read the file too
    pd.testing.assert_frame_equal(pd.read_parquet(path), big_frame)


def test_frame_without_attrs_gets_version_and_time(tmp_path):
    path = save_samples(pd.DataFrame({"a": [1, 2]}), tmp_path / "a.parquet")
    meta = load_samples(path).attrs["smpstats"]
    assert meta["package_version"] == package_version() and meta["created"].endswith("+00:00")


def test_overwrite_replaces_the_file_and_leaves_no_temporary_files(tmp_path, big_frame):
    target = tmp_path / "s.parquet"
    save_samples(pd.DataFrame({"a": [1]}), target)
    save_samples(big_frame, target)
    assert len(load_samples(target)) == 20_000
    assert sorted(os.listdir(tmp_path)) == ["s.parquet"]


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failed_write_leaves_existing_file_untouched(tmp_path, big_frame, monkeypatch, error):
    target = tmp_path / "s.parquet"
    save_samples(pd.DataFrame({"a": [1, 2, 3]}), target)
    before = target.read_bytes()

    def half_write(table, where, **kwargs):
        where.write(b"PAR1" + b"\0" * 1000)  # part of a file, then the crash
        raise error

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(type(error)):
        save_samples(big_frame, target)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["s.parquet"]
    monkeypatch.undo()
    assert list(load_samples(target)["a"]) == [1, 2, 3]


def test_failed_first_write_leaves_nothing(tmp_path, big_frame, monkeypatch):
    def fail(table, where, **kwargs):
        where.write(b"PAR1")
        raise OSError("no space left on device")

    monkeypatch.setattr(pq, "write_table", fail)
    with pytest.raises(OSError, match="no space left"):
        save_samples(big_frame, tmp_path / "new.parquet")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# errors on save
# ---------------------------------------------------------------------------


def test_save_errors(tmp_path):
    with pytest.raises(InputError, match=full("df must be a pandas DataFrame; got dict.")):
        save_samples({"a": [1]}, tmp_path / "x.parquet")
    with pytest.raises(InputError, match=full("metadata must be a dict of JSON-ready values; got list.")):
        save_samples(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet", metadata=[1])
    with pytest.raises(InputError, match=full(
        "metadata entry metadata['when'] is a set, which cannot be stored as JSON; pass numbers, strings, "
        "booleans, None, lists or dicts of them (or str(value)).")):
        save_samples(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet", metadata={"when": {1}})
    missing = tmp_path / "nope" / "x.parquet"
    with pytest.raises(DataFileError, match=full(
        f"Cannot save samples to '{missing}': the directory '{missing.parent}' does not exist; create it first.")):
        save_samples(pd.DataFrame({"a": [1]}), missing)
    with pytest.raises(DataFileError, match=full(
        f"Cannot save samples to '{tmp_path}': it is a directory; pass a file name such as "
        f"'{tmp_path / 'samples.parquet'}'.")):
        save_samples(pd.DataFrame({"a": [1]}), tmp_path)
    with pytest.raises(InputError, match=r"^df cannot be stored as Parquet: .*Give every column one type "
                                         r"\(e\.g\. df\[col\] = df\[col\]\.astype\(str\) for mixed objects\)\.$"):
        save_samples(pd.DataFrame({"a": [1, "x"]}), tmp_path / "x.parquet")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# errors on load
# ---------------------------------------------------------------------------


def test_missing_file(tmp_path):
    p = tmp_path / "none.parquet"
    with pytest.raises(DataFileError, match=full(
        f"No samples file at '{p}': check the path (save one with smpstats.save_samples).")):
        load_samples(p)


def test_directory(tmp_path):
    with pytest.raises(DataFileError, match=full(
        f"'{tmp_path}' is a directory, not a samples file; pass the path of a .parquet file.")):
        load_samples(tmp_path)


def test_not_parquet(tmp_path):
    p = tmp_path / "s.csv"
    pd.DataFrame({"a": [1, 2]}).to_csv(p)
    with pytest.raises(DataFileError, match=full(
        f"'{p}' is not a Parquet file (it does not start with the Parquet marker 'PAR1'); samples files are "
        "written by smpstats.save_samples. For CSV use pandas.read_csv.")):
        load_samples(p)
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(DataFileError, match=r"is not a Parquet file"):
        load_samples(empty)


def test_parquet_without_smpstats_metadata(tmp_path):
    p = tmp_path / "foreign.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(p)
    with pytest.raises(DataFileError, match=full(
        f"'{p}' is a Parquet file but not an smpstats samples file (no 'smpstats' metadata); read it with "
        "pandas.read_parquet, or save it with smpstats.save_samples.")):
        load_samples(p)
    with pytest.raises(DataFileError, match="not an smpstats samples file"):
        read_metadata(p)


def test_truncated_file(tmp_path, big_frame):
    p = save_samples(big_frame, tmp_path / "t.parquet")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match=full(
        f"'{p}' is truncated or corrupted: it starts as a Parquet file but its footer is missing "
        f"({len(data) // 2} bytes). Re-create it (save_samples writes atomically, so this comes from copying "
        "or editing).")):
        load_samples(p)


def test_corrupted_footer(tmp_path, big_frame):
    p = save_samples(big_frame, tmp_path / "f.parquet")
    data = bytearray(p.read_bytes())
    data[-8:-4] = (len(data) * 4).to_bytes(4, "little")  # footer length beyond the file
    p.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match=rf"^'{re.escape(str(p))}' is corrupted: its Parquet footer cannot be read \(.+\)\.$"):
        load_samples(p)


def test_corrupted_data_page_is_caught_by_checksums(tmp_path, big_frame):
    p = save_samples(big_frame, tmp_path / "d.parquet")
    col = pq.ParquetFile(p).metadata.row_group(0).column(0)
    start = col.data_page_offset
    middle = start + col.total_compressed_size // 2
    data = bytearray(p.read_bytes())
    data[middle] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match=rf"^'{re.escape(str(p))}' is corrupted: its data cannot be read \(.+\)\.$"):
        load_samples(p)


def test_corrupted_metadata(tmp_path):
    p = tmp_path / "m.parquet"
    table = pa.table({"a": [1]}).replace_schema_metadata({METADATA_KEY: b"{not json"})
    pq.write_table(table, p)
    with pytest.raises(DataFileError, match=rf"^'{re.escape(str(p))}' has corrupted smpstats metadata \(not a JSON object: .+\)\.$"):
        load_samples(p)


def test_atomic_write_commits_or_leaves_nothing(tmp_path):
    target = tmp_path / "notes.txt"
    with atomic_write(target) as fh:
        fh.write(b"first")
    assert target.read_bytes() == b"first"
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(ValueError, match="stop"):
        with atomic_write(target) as fh:
            fh.write(b"second, half")
            raise ValueError("stop")
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["notes.txt"]
    missing = tmp_path / "no" / "x.txt"
    with pytest.raises(DataFileError, match=full(
        f"Cannot write '{missing}': the directory '{missing.parent}' does not exist; create it first.")):
        with atomic_write(missing):
            pass
