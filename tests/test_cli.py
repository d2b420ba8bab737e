"""Tests of the command line (smpstats.cli): in-process through ``main``, one subprocess check.

Signals with a known SMP are piecewise linear, so the expected values are exact:
the SMP of y(t) is the sum of |slope jumps|, in y units per time unit.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import smpstats
from smpstats.cli import main
from smpstats.studies import STANDARD_BLOCKS

# ----------------------------------------------------------------------------- signals

#: Grid of the file signals: 1001 samples on [0, 1].
N = 1001
H = 1.0 / (N - 1)
T = np.linspace(0.0, 1.0, N)
#: Kinks between samples (off the grid) and well apart.
A = np.abs(T - 0.3004)  # one kink, slope -1 -> +1: SMP 2
B = 0.5 * np.maximum(T - 0.6102, 0.0) - 1.5 * np.abs(T - 0.8207)  # jumps 0.5 and 3: SMP 3.5
SMP_A, SMP_B = 2.0, 3.5
KINKS_A, KINKS_B = 1, 2


def run(capsys, *argv):
    """Run ``smpstats ARGV`` in-process; return (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_usage_error(capsys, *argv):
    """Run a command that argparse rejects; return stderr (the exit status must be 2)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    assert info.value.code == 2
    return capsys.readouterr().err


def table_rows(out: str, first_column: str) -> pd.DataFrame:
    """Parse the whitespace table printed by ``measure`` (header line starts with ``first_column``)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first_column])
    header = lines[start].split()
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line.split())
    # the 'reason' column is empty for resolved signals: keep the columns before it
    keep = header[:header.index("reason")] if "reason" in header else header
    return pd.DataFrame([r[:len(keep)] for r in rows], columns=keep)


@pytest.fixture
def csv_with_header(tmp_path):
    path = tmp_path / "with_header.csv"
    pd.DataFrame({"left": A, "right": B}).to_csv(path, index=False)
    return path


@pytest.fixture
def csv_without_header(tmp_path):
    path = tmp_path / "no_header.csv"
    np.savetxt(path, np.c_[A, B], delimiter=",")
    return path


# ----------------------------------------------------------------------------- help

def test_no_command_prints_help_and_succeeds(capsys):
    code, out, _ = run(capsys)
    assert code == 0
    assert out.startswith("usage: smpstats")
    for command in ("measure", "simulate", "blocks", "demo"):
        assert command in out


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"smpstats {smpstats.__version__}"


@pytest.mark.parametrize(
    ("command", "phrases"),
    [
        (None, ["nonsmoothness (SMP)", "sum of the magnitudes of the slope jumps", "smpstats COMMAND --help"]),
        ("measure", ["Measure SMP", "CSV", ".npy", "--spec", "--input-shape", "--noise", "--json", "--dt"]),
        ("simulate", ["Simulate a block or a chain of blocks", "per trial and stage", "--trials", "--out",
                      "Parquet"]),
        ("blocks", ["building blocks", "parameters"]),
        ("demo", ["default study", "report.md", "--out", "--trials"]),
    ],
)
def test_help_of_each_command_says_what_it_does(capsys, command, phrases):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} missing from 'smpstats {' '.join(argv)}'"


def test_entry_points_run_as_subprocesses():
    """The installed ``smpstats`` script and ``python -m smpstats.cli`` both print the help."""
    script = Path(sys.executable).with_name("smpstats")
    if not script.exists():
        pytest.skip("the smpstats console script is not installed next to this interpreter")
    for argv in ([str(script), "--help"], [sys.executable, "-m", "smpstats.cli", "--help"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: smpstats")
        assert "measure" in done.stdout and "simulate" in done.stdout


# ----------------------------------------------------------------------------- measure FILE

def test_measure_csv_with_header_prints_exact_smp_per_column(capsys, csv_with_header):
    code, out, err = run(capsys, "measure", csv_with_header, "--dt", H)
    assert code == 0, err
    assert out.splitlines()[0] == f"SMP of 2 signal(s) in {csv_with_header} ({N} samples, dt={H:g})"
    rows = table_rows(out, "signal")
    assert rows["signal"].tolist() == ["left", "right"]
    np.testing.assert_allclose(rows["smp"].astype(float), [SMP_A, SMP_B], rtol=1e-6)
    assert rows["n_peaks"].astype(int).tolist() == [KINKS_A, KINKS_B]
    assert rows["resolved"].tolist() == ["True", "True"]
    # the result's summary follows the table
    assert "SMP of 2 series of 1001 samples" in out
    assert "resolved 2 of 2" in out


def test_measure_csv_without_header_json(capsys, csv_without_header):
    code, out, err = run(capsys, "measure", csv_without_header, "--dt", H, "--json")
    assert code == 0, err
    doc = json.loads(out)  # nothing but JSON on stdout
    assert doc["title"] == f"SMP of 2 signal(s) in {csv_without_header} ({N} samples, dt={H:g})"
    assert [r["signal"] for r in doc["rows"]] == ["0", "1"]
    np.testing.assert_allclose([r["smp"] for r in doc["rows"]], [SMP_A, SMP_B], rtol=1e-6)
    assert [r["n_peaks"] for r in doc["rows"]] == [KINKS_A, KINKS_B]
    assert all(r["resolved"] is True and r["reason"] == "" for r in doc["rows"])
    assert doc["total"] == pytest.approx(SMP_A + SMP_B, rel=1e-6)


def test_measure_npy_1d(capsys, tmp_path):
    path = tmp_path / "one.npy"
    np.save(path, A)
    code, out, err = run(capsys, "measure", path, "--dt", H, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["rows"]) == 1 and doc["rows"][0]["signal"] == "0"
    assert doc["rows"][0]["smp"] == pytest.approx(SMP_A, rel=1e-6)
    assert doc["rows"][0]["n_peaks"] == KINKS_A


def test_measure_npy_2d_columns_are_signals(capsys, tmp_path):
    path = tmp_path / "two.npy"
    np.save(path, np.c_[A, B, np.zeros(N)])
    code, out, err = run(capsys, "measure", path, "--dt", H)
    assert code == 0, err
    assert f"SMP of 3 signal(s) in {path} ({N} samples" in out
    rows = table_rows(out, "signal")
    assert rows["signal"].tolist() == ["0", "1", "2"]
    np.testing.assert_allclose(rows["smp"].astype(float), [SMP_A, SMP_B, 0.0], rtol=1e-6, atol=1e-9)


def test_measure_integer_npy(capsys, tmp_path):
    """Integer samples are measured as floats: |n - 7| on unit steps has SMP 2."""
    path = tmp_path / "ints.npy"
    np.save(path, np.abs(np.arange(-3, 30) - 4))
    code, out, err = run(capsys, "measure", path, "--json")
    assert code == 0, err
    assert json.loads(out)["rows"][0]["smp"] == pytest.approx(2.0, rel=1e-9)


def test_measure_dt_sets_the_time_unit(capsys, tmp_path):
    """SMP is per time unit: with the default dt=1 (per sample) the slopes, and the SMP, are H times smaller."""
    path = tmp_path / "a.npy"
    np.save(path, A)
    code, out, err = run(capsys, "measure", path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["title"].endswith("dt=1)")
    assert doc["total"] == pytest.approx(SMP_A * H, rel=1e-6)


def test_measure_noise_option_is_used(capsys, tmp_path):
    """With --noise the given std is reported, raises the detection limit, and kinks far above it are kept."""
    rng = np.random.default_rng(12)
    noise = 1e-5
    path = tmp_path / "noisy.npy"
    np.save(path, np.c_[A, B] + noise * rng.standard_normal((N, 2)))
    code, out, err = run(capsys, "measure", path, "--dt", H, "--noise", noise, "--json")
    assert code == 0, err
    noisy = json.loads(out)["rows"]
    assert [r["noise"] for r in noisy] == pytest.approx([noise, noise], rel=1e-9)
    np.testing.assert_allclose([r["smp"] for r in noisy], [SMP_A, SMP_B], rtol=0.05)
    assert [r["n_peaks"] for r in noisy] == [KINKS_A, KINKS_B]

    clean = tmp_path / "clean.npy"
    np.save(clean, np.c_[A, B])
    code, out, err = run(capsys, "measure", clean, "--dt", H, "--noise", 0, "--json")
    assert code == 0, err
    exact = json.loads(out)["rows"]
    assert [r["noise"] for r in exact] == [0.0, 0.0]
    assert all(n["detection_limit"] > e["detection_limit"] for n, e in zip(noisy, exact))


def test_measure_noise_must_not_be_negative(capsys, csv_with_header):
    code, out, err = run(capsys, "measure", csv_with_header, "--noise", -1)
    assert code == 2 and out == ""
    assert err.startswith("smpstats measure: error: noise must be finite and >= 0")
    assert "got -1.0" in err


def test_measure_json_rows_agree_with_total(capsys, tmp_path):
    path = tmp_path / "tiny.npy"
    np.save(path, 1e-12 * A)
    code, out, _ = run(capsys, "measure", path, "--dt", H, "--json")
    doc = json.loads(out)
    assert sum(r["smp"] for r in doc["rows"]) == pytest.approx(doc["total"], rel=1e-9)


def test_measure_csv_without_header_and_repeated_first_values(capsys, tmp_path):
    # 0.5 |n - 1| on unit steps: one kink of jump 1 at the second sample, in both columns.
    y = 0.5 * np.abs(np.arange(12.0) - 1.0)
    path = tmp_path / "repeated.csv"
    np.savetxt(path, np.c_[y, y], delimiter=",", fmt="%g")
    assert path.read_text().splitlines()[0] == "0.5,0.5"
    code, out, err = run(capsys, "measure", path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert "(12 samples" in doc["title"]
    assert [r["signal"] for r in doc["rows"]] == ["0", "1"]
    assert [r["smp"] for r in doc["rows"]] == pytest.approx([1.0, 1.0])


# ----------------------------------------------------------------------------- measure --spec

def test_measure_spec_relu_matches_kac_rice(capsys):
    """relu of a unit SE process (length scale 0.25) has E[SMP] = T sigma'^2 phi(0) / sigma = 16 phi(0)."""
    n_units = 256
    code, out, err = run(capsys, "measure", "--spec", "relu", "--input-shape", n_units, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["title"].startswith("SMP of relu with random weights (seed 0) along a Gaussian-process path")
    assert len(doc["rows"]) == n_units
    assert [r["component"] for r in doc["rows"]] == list(range(n_units))
    values = np.array([r["smp"] for r in doc["rows"]])
    assert doc["total"] == pytest.approx(values.sum(), rel=1e-8)
    expected = 16.0 / np.sqrt(2.0 * np.pi)
    assert values.mean() == pytest.approx(expected, rel=0.10)
    # grazing zero crossings put two kinks within a few samples: a few units are honestly unresolved
    assert np.mean([r["resolved"] for r in doc["rows"]]) > 0.9


def test_measure_spec_segment_gives_at_most_one_relu_kink_per_unit(capsys):
    """Along a straight segment each ReLU input is linear in t: it crosses zero at most once."""
    code, out, err = run(capsys, "measure", "--spec", "relu", "--input-shape", 64, "--path", "segment", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert "along a straight segment" in doc["title"]
    n_peaks = [r["n_peaks"] for r in doc["rows"]]
    assert set(n_peaks) <= {0, 1} and 0 < sum(n_peaks) < 64


def test_measure_spec_affine_chain_on_segment_is_exactly_smooth(capsys):
    code, out, err = run(capsys, "measure", "--spec", "linear(out_features=5)|linear(out_features=3)",
                         "--input-shape", "2,4", "--path", "segment", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["rows"]) == 3
    assert doc["total"] == 0.0
    assert all(r["n_peaks"] == 0 for r in doc["rows"])


def test_measure_spec_prints_a_table(capsys):
    code, out, err = run(capsys, "measure", "--spec", "linear(out_features=8) | relu | linear(out_features=3)",
                         "--input-shape", 4, "--n-points", 513)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == ("SMP of linear(out_features=8) | relu | linear(out_features=3) with random weights "
                        "(seed 0) along a Gaussian-process path, 513 points")
    rows = table_rows(out, "component")
    assert rows["component"].astype(int).tolist() == [0, 1, 2]
    assert (rows["smp"].astype(float) >= 0).all()
    assert "SMP of 3 series of 513 samples" in out
    assert "error" not in err


def test_measure_spec_json_has_one_row_per_output_component(capsys):
    """conv1d(out_channels=2, kernel_size=3) on (2, 8) gives outputs of shape (2, 6): 12 rows indexed [c, l]."""
    code, out, err = run(capsys, "measure", "--spec", "conv1d(out_channels=2,kernel_size=3)|relu",
                         "--input-shape", "2,8", "--n-points", 513, "--json")
    assert code == 0, err
    doc = json.loads(out)
    rows = doc["rows"]
    assert len(rows) == 12
    assert [tuple(r["index"]) for r in rows] == [(c, l) for c in range(2) for l in range(6)]
    assert {"component", "smp", "n_peaks", "resolved", "reason"} <= set(rows[0])
    assert doc["total"] == pytest.approx(sum(r["smp"] for r in rows), rel=1e-8, abs=1e-9)


def test_measure_spec_is_reproducible_and_seeded(capsys):
    argv = ["measure", "--spec", "linear(out_features=4)|relu", "--input-shape", 6, "--n-points", 257, "--json"]
    first = json.loads(run(capsys, *argv)[1])
    again = json.loads(run(capsys, *argv)[1])
    other = json.loads(run(capsys, *argv, "--seed", 1)[1])
    assert first == again
    assert first["rows"] != other["rows"]


# ----------------------------------------------------------------------------- measure errors

def test_measure_missing_file(capsys, tmp_path):
    missing = tmp_path / "nope.csv"
    code, out, err = run(capsys, "measure", missing)
    assert code == 2 and out == ""
    assert err == f"smpstats measure: error: cannot read {str(missing)!r}: no such file.\n"


def test_measure_garbage_npy(capsys, tmp_path):
    path = tmp_path / "garbage.npy"
    path.write_bytes(bytes(range(256)) * 4)
    code, out, err = run(capsys, "measure", path)
    assert code == 2 and out == ""
    assert err == f"smpstats measure: error: cannot read {str(path)!r}: it is not a .npy array file (no NumPy header).\n"


def test_measure_garbage_npy_message_does_not_suggest_unpickling(capsys, tmp_path):
    path = tmp_path / "garbage.npy"
    path.write_bytes(bytes(range(256)) * 4)
    code, _, err = run(capsys, "measure", path)
    assert code == 2
    assert "allow_pickle" not in err and "pickled" not in err
    assert "not a .npy array file" in err


def test_measure_binary_garbage_csv(capsys, tmp_path):
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 4)
    code, out, err = run(capsys, "measure", path)
    assert code == 2 and out == ""
    assert err.startswith(f"smpstats measure: error: cannot read {str(path)!r} as CSV "
                          "(one column per signal, one row per time sample): ")


def test_measure_empty_csv(capsys, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    code, _, err = run(capsys, "measure", path)
    assert code == 2
    assert err.startswith(f"smpstats measure: error: cannot read {str(path)!r} as CSV")


def test_measure_csv_with_text_column(capsys, tmp_path):
    path = tmp_path / "text.csv"
    path.write_text("a,b\n1,x\n2,y\n3,z\n")
    code, out, err = run(capsys, "measure", path)
    assert code == 2 and out == ""
    assert err == (f"smpstats measure: error: {str(path)!r}: column(s) b are not numeric; expected one numeric "
                   "column per signal and one row per time sample (a header row is allowed).\n")


def test_measure_3d_npy(capsys, tmp_path):
    path = tmp_path / "cube.npy"
    np.save(path, np.zeros((3, 4, 5)))
    code, out, err = run(capsys, "measure", path)
    assert code == 2 and out == ""
    assert err == (f"smpstats measure: error: {str(path)!r} holds an array of shape (3, 4, 5); expected "
                   "(n_times,) or (n_times, n_components).\n")


def test_measure_signal_with_nan(capsys, tmp_path):
    path = tmp_path / "nan.npy"
    np.save(path, np.array([0.0, 1.0, np.nan, 3.0, 4.0]))
    code, _, err = run(capsys, "measure", path)
    assert code == 2
    assert err.startswith("smpstats measure: error: y contains NaN or infinite values")


def test_measure_unknown_block_in_spec(capsys):
    code, out, err = run(capsys, "measure", "--spec", "relu|foo", "--input-shape", "4,8")
    assert code == 2 and out == ""
    assert err.startswith("smpstats measure: error: Unknown block 'foo'. Known blocks: linear, conv1d, conv2d, relu,")


def test_measure_bad_block_parameter(capsys):
    code, _, err = run(capsys, "measure", "--spec", "maxpool2d(kernel_size=0)", "--input-shape", "1,4,4")
    assert code == 2
    assert err.startswith("smpstats measure: error: The 'kernel_size' parameter of maxpool2d must be an int >= 1")
    assert err.rstrip().endswith("Got 0.")


def test_measure_input_shape_that_does_not_fit_the_block(capsys):
    code, _, err = run(capsys, "measure", "--spec", "conv2d(out_channels=2,kernel_size=3)", "--input-shape", 4)
    assert code == 2
    assert "needs an input of shape (channels, height, width) but gets shape (4,)" in err


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("4,a", "argument --input-shape: expected a shape as comma-separated positive ints, e.g. 4,64 or 3,16,16; "
                "got '4,a'"),
        ("0,3", "argument --input-shape: expected positive ints, e.g. 4,64; got '0,3'"),
        (",", "argument --input-shape: expected positive ints, e.g. 4,64; got ','"),
    ],
)
def test_measure_bad_input_shape_is_a_usage_error(capsys, shape, message):
    err = run_usage_error(capsys, "measure", "--spec", "relu", "--input-shape", shape)
    assert err.startswith("usage: smpstats measure")
    assert err.rstrip().endswith(f"smpstats measure: error: {message}")


def test_measure_input_shape_accepts_x_separator(capsys):
    code, out, err = run(capsys, "measure", "--spec", "relu", "--input-shape", "2x3", "--n-points", 129, "--json")
    assert code == 0, err
    assert len(json.loads(out)["rows"]) == 6


@pytest.mark.parametrize("dt", ["0", "-1", "nan", "fast"])
def test_measure_dt_must_be_positive(capsys, csv_with_header, dt):
    err = run_usage_error(capsys, "measure", csv_with_header, "--dt", dt)
    assert err.rstrip().endswith(f"argument --dt: expected a positive number; got {dt!r}")


def test_measure_with_both_file_and_spec(capsys, csv_with_header):
    err = run_usage_error(capsys, "measure", csv_with_header, "--spec", "relu", "--input-shape", 4)
    assert err.rstrip().endswith("error: measure needs either FILE or --spec (not both)")


def test_measure_with_neither_file_nor_spec(capsys):
    err = run_usage_error(capsys, "measure")
    assert err.rstrip().endswith("error: measure needs either FILE or --spec (not both)")


def test_measure_spec_without_input_shape(capsys):
    err = run_usage_error(capsys, "measure", "--spec", "relu")
    assert err.rstrip().endswith("error: --spec needs --input-shape (e.g. --input-shape 4,64)")


# ----------------------------------------------------------------------------- simulate

def test_simulate_writes_samples_with_metadata(capsys, tmp_path):
    out_file = tmp_path / "relu.parquet"
    code, out, err = run(capsys, "simulate", "linear(out_features=4)|relu", "--trials", 3, "--input-shape", 4,
                         "--n-points", 256, "--seed", 7, "--out", out_file, "--no-progress")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"wrote 6 rows (3 trials x 2 stage(s)) to {out_file}"
    assert lines[-1] == "Next: smpstats.load_samples(path) reads the table back with its metadata."
    # the summary: mean per stage; a linear map of smooth inputs creates no SMP, relu does
    summary = "\n".join(lines[1:-1])
    assert re.search(r"^1\s+linear\s", summary, re.M) and re.search(r"^2\s+relu\s", summary, re.M)
    assert "smp_out" in summary and "kinks_out" in summary

    df = smpstats.load_samples(out_file)
    assert len(df) == 6
    assert sorted(df["trial"].unique()) == [0, 1, 2]
    assert df.groupby("trial")["stage"].apply(sorted).tolist() == [[1, 2]] * 3
    assert df.groupby("stage")["block"].first().to_dict() == {1: "linear", 2: "relu"}
    meta = df.attrs["smpstats"]
    assert meta["seed"] == 7 and meta["n_trials"] == 3 and meta["n_points"] == 256
    assert meta["spec"] == "linear(out_features=4) | relu"
    assert meta["package_version"] == smpstats.__version__
    linear, relu = df[df["stage"] == 1], df[df["stage"] == 2]
    assert (linear["smp_out"] == 0).all()
    assert (relu["smp_out"] > 0).all()
    # the printed means are the table's means
    printed = re.search(r"^2\s+relu\s+(\S+)\s+(\S+)", summary, re.M)
    assert float(printed.group(2)) == pytest.approx(relu["smp_out"].mean(), rel=1e-5)


def test_simulate_unknown_block_writes_nothing(capsys, tmp_path):
    out_file = tmp_path / "x.parquet"
    code, out, err = run(capsys, "simulate", "reluu", "--trials", 2, "--out", out_file, "--no-progress")
    assert code == 2 and out == ""
    assert err.startswith("smpstats simulate: error: Unknown block 'reluu'. Did you mean 'relu'? Known blocks: ")
    assert not out_file.exists()
    assert list(tmp_path.iterdir()) == []


def test_simulate_needs_out(capsys):
    err = run_usage_error(capsys, "simulate", "relu", "--trials", 2)
    assert "the following arguments are required: --out/-o" in err


def test_simulate_trials_must_be_positive(capsys, tmp_path):
    code, _, err = run(capsys, "simulate", "relu", "--trials", 0, "--out", tmp_path / "x.parquet")
    assert code == 2
    assert err == "smpstats simulate: error: --trials must be an int >= 1; got 0.\n"


def test_simulate_into_missing_directory(capsys, tmp_path):
    target = tmp_path / "missing" / "x.parquet"
    code, _, err = run(capsys, "simulate", "relu", "--trials", 1, "--input-shape", "2,8", "--n-points", 256,
                       "--out", target, "--no-progress")
    assert code == 2
    assert err.startswith("smpstats simulate: error: Cannot save samples to")
    assert "does not exist; create it first." in err


# ----------------------------------------------------------------------------- blocks

def test_blocks_lists_every_block(capsys):
    code, out, _ = run(capsys, "blocks")
    assert code == 0
    names = ["linear", "conv1d", "conv2d", "relu", "leaky_relu", "prelu", "maxpool1d", "maxpool2d",
             "avgpool1d", "avgpool2d", "batchnorm", "gelu", "silu", "softplus", "tanh", "flatten"]
    for name in names:
        assert re.search(rf"^{name}: ", out, re.M), name


def test_blocks_relu(capsys):
    code, out, _ = run(capsys, "blocks", "relu")
    assert code == 0
    assert out.splitlines()[0] == "relu: max(x, 0)"
    assert "creates kinks" in out and "no parameters" in out


def test_blocks_shows_parameters(capsys):
    code, out, _ = run(capsys, "blocks", "maxpool2d")
    assert code == 0
    assert re.search(r"^  kernel_size: .*\(required\)", out, re.M)
    assert "relu:" not in out


def test_blocks_unknown_name(capsys):
    code, out, err = run(capsys, "blocks", "nosuch")
    assert code == 2 and out == ""
    assert err.startswith("smpstats blocks: error: Unknown block 'nosuch'. Known blocks: linear,")


def test_interrupt_exits_130_with_a_message(capsys, monkeypatch):
    import smpstats.blocks

    def interrupted(name=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(smpstats.blocks, "block_help", interrupted)
    code, out, err = run(capsys, "blocks")
    assert code == 130 and out == ""
    assert err == "smpstats blocks: interrupted; nothing partial was written.\n"


# ----------------------------------------------------------------------------- demo

KINK_BLOCKS = {"relu", "leaky_relu", "prelu", "maxpool1d", "maxpool2d"}


def test_demo_writes_the_report(capsys, tmp_path):
    out_dir = tmp_path / "demo"
    code, out, err = run(capsys, "demo", "--trials", 2, "--out", out_dir, "--no-progress")
    assert code == 0, err
    assert out.strip() == f"report written to {out_dir / 'report.md'}"

    report = (out_dir / "report.md").read_text()
    for heading in ("# smpstats demo report", "## 1. Which building blocks create nonsmoothness",
                    "## 2. A small network along a smooth path", "## 4. Per-block transfer models",
                    "## 5. Predicting a whole network", "## Next steps"):
        assert re.search(rf"^{re.escape(heading)}$", report, re.M), heading
    assert "Each block was simulated 2 times" in report
    for image in ("sources.png", "refinement.png", "network_output.png", "transfer_coverage.png",
                  "transfer_bands_relu.png", "chain_theory.png", "chain_regression.png"):
        assert f"]({image})" in report
        assert (out_dir / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = pd.read_csv(out_dir / "sources_table.csv")
    assert table["block_spec"].tolist() == [spec for spec, _ in STANDARD_BLOCKS]
    assert (table["n_trials"] == 2).all()
    for spec, _ in STANDARD_BLOCKS:
        assert spec in report
    # the claim of section 1: exactly the rectifiers and max pooling create SMP from smooth inputs
    kinky = [smpstats.parse_spec(spec)[0].name in KINK_BLOCKS for spec in table["block_spec"]]
    assert table["creates_smp"].tolist() == kinky
    assert table.loc[table["theory_smp"].notna(), "rel_error"].abs().max() < 0.2

    samples = smpstats.load_samples(out_dir / "sources_samples.parquet")
    assert len(samples) == 2 * len(STANDARD_BLOCKS)
    assert samples.attrs["smpstats"]["study"] == "sources_of_nonsmoothness"
    chain = smpstats.load_samples(out_dir / "chain_samples.parquet")
    assert (chain["method"] == "exact").all() and chain["trial"].nunique() == 10


def test_measure_exact_agrees_with_a_fine_grid(capsys):
    spec = "linear(out_features=16)|relu|linear(out_features=2)"
    code, out, err = run(capsys, "measure", "--spec", spec, "--input-shape", 8, "--path", "segment", "--exact", "--json")
    assert code == 0, err
    exact = json.loads(out)
    assert exact["title"].startswith("Exact SMP of")
    code, out, err = run(capsys, "measure", "--spec", spec, "--input-shape", 8, "--path", "segment",
                         "--n-points", 100001, "--json")
    grid = json.loads(out)
    np.testing.assert_allclose([r["smp"] for r in exact["rows"]], [r["smp"] for r in grid["rows"]], rtol=1e-6)
    assert exact["total"] > 0


def test_measure_exact_needs_a_segment(capsys):
    err = run_usage_error(capsys, "measure", "--spec", "relu", "--input-shape", 4, "--exact")
    assert err.rstrip().endswith("error: --exact needs --path segment (exact SMP is computed along straight segments)")


def test_simulate_exact(capsys, tmp_path):
    out_file = tmp_path / "exact.parquet"
    code, out, err = run(capsys, "simulate", "relu", "--input-shape", 8, "--trials", 2, "--path", "segment",
                         "--exact", "--out", out_file, "--no-progress")
    assert code == 0, err
    df = smpstats.load_samples(out_file)
    assert (df["method"] == "exact").all() and (df["family"] == "segment").all()
