"""``smpstats forensic``: CSV and NPY round trips, JSON, figure, errors (exit status 2)."""

import json

import numpy as np
import pytest

from smpstats.cli import main
from smpstats.forensics import assess
from smpstats.processes import sample_se_gp


@pytest.fixture(scope="module")
def track():
    rng = np.random.default_rng(0)
    return sample_se_gp(256, 1.0, 40.0, size=2, rng=rng).T + 0.01 * rng.standard_normal((256, 2))


def test_csv_and_npy_give_the_report_of_the_api(tmp_path, track, capsys):
    csv, npy = tmp_path / "track.csv", tmp_path / "track.npy"
    np.savetxt(csv, track, delimiter=",", header="x,y", comments="")
    np.save(npy, track)
    expected = assess(track, dt=0.04, seed=2).to_dict()
    for path in (csv, npy):
        assert main(["forensic", str(path), "--dt", "0.04", "--seed", "2", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["components"] == (["x", "y"] if path == csv else ["0", "1"])
        assert out["log_bayes_factor"] == pytest.approx(expected["log_bayes_factor"], abs=1e-12)
        assert out["p_value_smooth"] == expected["p_value_smooth"]
        assert out["noise"] == pytest.approx(expected["noise"], rel=1e-12)


def test_text_report_and_figure(tmp_path, track, capsys):
    path, fig = tmp_path / "track.npy", tmp_path / "report.png"
    np.save(path, track)
    assert main(["forensic", str(path), "--figure", str(fig), "--prior-odds", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "posterior P(network)" in text and "prior odds 0.5" in text and "Assumed:" in text
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_exit_with_status_2(tmp_path, capsys):
    short = tmp_path / "short.npy"
    np.save(short, np.random.default_rng(1).standard_normal((30, 2)))
    assert main(["forensic", str(short)]) == 2
    assert "trajectory needs at least 64 samples" in capsys.readouterr().err
    assert main(["forensic", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    ok = tmp_path / "ok.npy"
    np.save(ok, np.random.default_rng(2).standard_normal((100, 1)))
    assert main(["forensic", str(ok), "--null-sims", "3"]) == 2
    assert "--null-sims must be an int >= 19; got 3." in capsys.readouterr().err
