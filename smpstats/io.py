"""Saving and loading sample tables (Parquet with smpstats metadata).

:func:`save_samples` writes a :class:`pandas.DataFrame` to Parquet (pyarrow)
and stores JSON metadata under the key ``b"smpstats"`` of the file's schema
metadata: what ``df.attrs["smpstats"]`` holds (spec, seed, settings, from
:func:`smpstats.simulation.simulate`), the caller's ``metadata``, the package
version and the creation time. The write is atomic: the table goes to a
temporary file in the target's directory, which is flushed, synced and then
renamed over the target, so a crash leaves either the old file or the new one,
never half a file.

:func:`load_samples` reads such a file back, with the metadata in
``df.attrs["smpstats"]``, and raises :class:`~smpstats.errors.DataFileError`
with a plain message for a missing, unreadable, truncated, corrupted, non
Parquet or foreign file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import numbers
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import DataFileError, InputError

__all__ = ["save_samples", "load_samples", "read_metadata", "atomic_write", "atomic_path", "save_figure", "package_version",
           "METADATA_KEY"]

#: Key of the smpstats metadata in the Parquet schema metadata.
METADATA_KEY = b"smpstats"
#: Format tag stored with the metadata.
_FORMAT = "smpstats.samples"
_FORMAT_VERSION = 1
_MAGIC = b"PAR1"


def package_version() -> str:
    """The installed smpstats version ("unknown" when it cannot be found)."""
    import smpstats

    version = getattr(smpstats, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import PackageNotFoundError, version as _version

        return _version("smpstats")
    except PackageNotFoundError:
        return "unknown"


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON types for ``value`` (tuples -> lists, numpy -> Python), or InputError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return v if np.isfinite(v) else str(v)
    if isinstance(value, np.ndarray):
        return [_jsonable(v, where) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (Path, _dt.datetime, _dt.date)):
        return str(value)
    raise InputError(
        f"metadata entry {where} is a {type(value).__name__}, which cannot be stored as JSON; "
        "pass numbers, strings, booleans, None, lists or dicts of them (or str(value))."
    )


def save_samples(df, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write a sample table to Parquet atomically, with smpstats metadata.

    Parameters
    ----------
    df : pandas.DataFrame
        The table, e.g. from :func:`smpstats.simulation.simulate`. Its
        ``attrs["smpstats"]`` (spec, seed, ...) is stored with it.
    path : str or path-like
        Target file (conventionally ``*.parquet``); its directory must exist.
        An existing file is replaced only once the new one is complete.
    metadata : dict, optional
        Extra JSON-ready entries; they are added to (and override) the entries
        of ``df.attrs["smpstats"]``.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    InputError
        ``df`` is not a DataFrame, a column cannot be stored, or metadata is
        not JSON-ready.
    DataFileError
        The directory does not exist or cannot be written.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(df, pd.DataFrame):
        raise InputError(f"df must be a pandas DataFrame; got {type(df).__name__}.")
    if metadata is not None and not isinstance(metadata, dict):
        raise InputError(f"metadata must be a dict of JSON-ready values; got {type(metadata).__name__}.")
    target = Path(os.fspath(path))
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise DataFileError(f"Cannot save samples to '{target}': the directory '{directory}' does not exist; create it first.")
    if target.is_dir():
        raise DataFileError(f"Cannot save samples to '{target}': it is a directory; pass a file name such as '{target / 'samples.parquet'}'.")

    meta = dict(df.attrs.get("smpstats", {}) or {})
    meta.update(metadata or {})
    meta.setdefault("package_version", package_version())
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta["format"] = _FORMAT
    meta["format_version"] = _FORMAT_VERSION
    meta["saved"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    meta = _jsonable(meta, "metadata")

    plain = df.copy(deep=False)
    plain.attrs = {}
    try:
        table = pa.Table.from_pandas(plain)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InputError(
            f"df cannot be stored as Parquet: {exc}. Give every column one type "
            "(e.g. df[col] = df[col].astype(str) for mixed objects)."
        ) from exc
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[METADATA_KEY] = json.dumps(meta, sort_keys=True).encode("utf-8")
    table = table.replace_schema_metadata(schema_meta)

    with atomic_write(target) as fh:
        pq.write_table(table, fh, write_page_checksum=True)
    return target


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open ``path`` for writing bytes so that it appears complete or not at all.

    Yields a binary file object on a temporary file in the target's directory.
    When the ``with`` block ends normally the file is flushed, synced to disk
    and renamed over ``path`` (``os.replace``, atomic on POSIX and Windows);
    when it raises (any exception, KeyboardInterrupt included) the temporary
    file is removed and an existing file at ``path`` is left untouched.

    Examples
    --------
    >>> with atomic_write("table.csv") as fh:  # doctest: +SKIP
    ...     fh.write(df.to_csv().encode())
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        yield fh


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_write`, for writers that take a file name (netCDF, HDF5).

    Yields the path of a temporary file in the target's directory; when the
    ``with`` block ends normally that file is synced to disk and renamed over
    ``path``, otherwise removed (an existing file at ``path`` is untouched).
    """
    target = Path(os.fspath(path))
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise DataFileError(f"Cannot write '{target}': the directory '{directory}' does not exist; create it first.")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise DataFileError(f"Cannot write '{target}': cannot create a file in '{directory}' ({exc.strerror}).") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, _file_mode(target))  # mkstemp makes 0600 files; give the usual permissions
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG atomically (:func:`atomic_write`) and close it; returns the path."""
    import matplotlib.pyplot as plt

    target = Path(os.fspath(path))
    try:
        with atomic_write(target) as fh:
            fig.savefig(fh, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return target


def _file_mode(target: Path) -> int:
    """Permissions for a new file at ``target``: those of the file it replaces, else 0666 less the umask."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(os.fspath(path))
    if not p.exists():
        raise DataFileError(f"No samples file at '{p}': check the path (save one with smpstats.save_samples).")
    if p.is_dir():
        raise DataFileError(f"'{p}' is a directory, not a samples file; pass the path of a .parquet file.")
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(4)
            fh.seek(max(size - 4, 0))
            tail = fh.read(4)
    except OSError as exc:
        raise DataFileError(f"Cannot read '{p}': {exc.strerror or exc}.") from exc
    if head != _MAGIC:
        raise DataFileError(
            f"'{p}' is not a Parquet file (it does not start with the Parquet marker 'PAR1'); "
            "samples files are written by smpstats.save_samples. For CSV use pandas.read_csv."
        )
    if size < 12 or tail != _MAGIC:
        raise DataFileError(
            f"'{p}' is truncated or corrupted: it starts as a Parquet file but its footer is missing "
            f"({size} bytes). Re-create it (save_samples writes atomically, so this comes from copying or editing)."
        )
    return p


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Return the smpstats metadata of a samples file without reading the table."""
    import pyarrow.parquet as pq

    p = _check_file(path)
    try:
        schema = pq.read_schema(p)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for damaged footers
        raise DataFileError(f"'{p}' is corrupted: its Parquet footer cannot be read ({exc}).") from exc
    return _decode_metadata(p, schema.metadata)


def _decode_metadata(p: Path, schema_meta: dict | None) -> dict[str, Any]:
    raw = (schema_meta or {}).get(METADATA_KEY)
    if raw is None:
        raise DataFileError(
            f"'{p}' is a Parquet file but not an smpstats samples file (no 'smpstats' metadata); "
            "read it with pandas.read_parquet, or save it with smpstats.save_samples."
        )
    try:
        meta = json.loads(raw.decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataFileError(f"'{p}' has corrupted smpstats metadata (not a JSON object: {exc}).") from exc
    return meta


def load_samples(path: str | os.PathLike):
    """Read a samples table written by :func:`save_samples`.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    pandas.DataFrame
        The table, with the stored metadata in ``df.attrs["smpstats"]``.

    Raises
    ------
    DataFileError
        The file is missing, a directory, not Parquet, truncated, corrupted
        (page checksums are verified), or has no smpstats metadata.
    """
    import pyarrow.parquet as pq

    p = _check_file(path)
    try:
        pf = pq.ParquetFile(p, page_checksum_verification=True)
    except Exception as exc:
        raise DataFileError(f"'{p}' is corrupted: its Parquet footer cannot be read ({exc}).") from exc
    meta = _decode_metadata(p, pf.schema_arrow.metadata)
    try:
        table = pf.read()
    except Exception as exc:
        raise DataFileError(f"'{p}' is corrupted: its data cannot be read ({exc}).") from exc
    try:
        df = table.to_pandas()
    except Exception as exc:
        raise DataFileError(f"'{p}' is corrupted: its table cannot be converted to pandas ({exc}).") from exc
    df.attrs["smpstats"] = meta
    return df
