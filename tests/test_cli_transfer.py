"""CLI of the transfer models: smpstats samples -> fit -> check."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from smpstats.cli import main
from smpstats.io import load_samples
from smpstats.theory_terms import FAMILIES
from smpstats.training_data import CONFIGS


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("command", "phrases"), [
    ("samples", ["block families", "'train' and 'holdout'", "--families", "--trials", "--out"]),
    ("fit", ["transfer model", "--kind", "netCDF", "convergence checks", "--sampler"]),
    ("check", ["held-out", "coverage", "CRPS", "LOO", "--holdout", "--figures", "--json", "Exit status 1"]),
])
def test_help_says_what_each_command_does(capsys, command, phrases):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for phrase in phrases:
        assert phrase in out


def test_samples_fit_check_round_trip(capsys, tmp_path):
    train, hold = tmp_path / "train.parquet", tmp_path / "hold.parquet"
    code, out, _ = run(capsys, "samples", "--families", "avgpool", "--trials", "12", "--n-points", "512", "--out", train,
                       "--no-progress")
    n_configs = len(CONFIGS["avgpool"]["train"])
    assert code == 0 and f"wrote {12 * n_configs} rows" in out
    t = load_samples(train)
    assert set(t["split"]) == {"train"} and t["source"].nunique() == n_configs
    code, _, _ = run(capsys, "samples", "--families", "avgpool", "--split", "holdout", "--trials", "12",
                     "--seed", "1", "--n-points", "512", "--out", hold, "--no-progress")
    assert code == 0
    assert not set(load_samples(hold)["source"]) & set(t["source"])  # held-out configurations are new
    model = tmp_path / "fit.json"
    code, out, _ = run(capsys, "fit", train, "--kind", "regression", "--out", model)
    assert code == 0 and "RegressionTransfer" in out and model.exists()
    figs = tmp_path / "figs"
    code, out, _ = run(capsys, "check", model, "--holdout", hold, "--figures", figs, "--json", "--draws", "300")
    doc = json.loads(out)
    assert code == (0 if doc["passed"] else 1)
    fam = {r["family"]: r for r in doc["table"]}
    assert fam["avgpool"]["n"] == 12 * len(CONFIGS["avgpool"]["holdout"])
    assert 0.0 <= fam["avgpool"]["coverage_90"] <= 1.0
    assert len(doc["configs"]) == len(CONFIGS["avgpool"]["holdout"])
    assert sorted(p.name for p in figs.iterdir()) == ["bands_avgpool.png", "config_intervals.png", "coverage.png",
                                                      "pit.png"]


def test_check_errors_are_specific(capsys, tmp_path):
    bad = tmp_path / "model.json"
    bad.write_text("{not json")
    hold = tmp_path / "hold.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(hold)
    code, _, err = run(capsys, "check", bad, "--holdout", hold)
    assert code == 2 and "not a smpstats model file" in err
    code, _, err = run(capsys, "fit", hold, "--out", tmp_path / "m.json")
    assert code == 2 and "error:" in err
    assert not (tmp_path / "m.json").exists()


def test_predict_prints_json_and_writes_a_figure(capsys, tmp_path):
    fig = tmp_path / "p.png"
    spec = "linear(out_features=8)|relu|linear(out_features=8)"
    code, out, _ = run(capsys, "predict", spec, "--input-shape", "8", "--draws", "200", "--json", "--figure", fig)
    assert code == 0
    doc = json.loads(out)
    assert [s["block"] for s in doc["stages"]] == ["linear", "relu", "linear"]
    assert doc["stages"][0]["mean"] == 0.0 and doc["stages"][1]["mean"] > 0
    assert doc["stages"][1]["lower_90"] <= doc["stages"][1]["median"] <= doc["stages"][1]["upper_90"]
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run(capsys, "predict", "relu", "--input-shape", "4", "--draws", "50")
    assert code == 0 and "Predicted SMP per unit" in out
    code, _, err = run(capsys, "predict", "relu", "--draws", "0")
    assert code == 2 and "--draws" in err


def test_predict_compares_with_simulated_networks(capsys):
    spec = "linear(out_features=8)|relu|linear(out_features=8)"
    code, out, _ = run(capsys, "predict", spec, "--input-shape", "8", "--draws", "200", "--model", "regression",
                       "--compare", "6", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["kind"] == "regression"
    rows = doc["comparison"]
    assert [r["stage"] for r in rows] == [1, 2, 3]
    assert rows[0]["simulated"] == 0.0 and rows[2]["simulated"] > 0  # exact SMP: an affine map of a smooth path
    assert 0.0 <= rows[2]["coverage_90"] <= 1.0
    code, _, err = run(capsys, "predict", spec, "--input-shape", "8", "--compare", "-1")
    assert code == 2 and "--compare must be >= 0" in err


def test_exact_samples_measure_piecewise_linear_configurations_exactly(capsys, tmp_path):
    out = tmp_path / "exact.parquet"
    code, _, _ = run(capsys, "samples", "--families", "avgpool", "smooth", "--split", "holdout", "--trials", "3",
                     "--n-points", "257", "--exact", "--out", out, "--no-progress")
    assert code == 0
    t = load_samples(out)
    family = t["block"].map(FAMILIES)
    method = t.groupby(family)["method"].agg(set)
    assert method["avgpool"] == {"exact"} and method["smooth"] == {"grid"}  # smooth activations: not piecewise linear
    avg = t[family == "avgpool"]
    kinked = avg["prev_block_spec"] == ""  # kinked inputs straight into the pooling: their exact SMP passes whole
    assert kinked.any()
    np.testing.assert_allclose(avg.loc[kinked, "smp_out"], avg.loc[kinked, "smp_in"], rtol=1e-9)
