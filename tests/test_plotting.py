"""Tests of smpstats.plotting: each function returns a Figure with the expected panels (Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import smpstats  # noqa: E402
from smpstats.plotting import plot_kinks, plot_refinement, plot_sources  # noqa: E402
from smpstats.studies import SourcesStudy  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def tiny_study(with_kinky_blocks: bool = True, n_trials: int = 3) -> SourcesStudy:
    """A hand-made study in the shape of sources_of_nonsmoothness' result."""
    specs = ["tanh", "relu", "maxpool1d(kernel_size=2)"] if with_kinky_blocks else ["tanh", "gelu"]
    rng = np.random.default_rng(0)
    rows = []
    for spec in specs:
        kinky = spec != "tanh" and spec != "gelu"
        for trial in range(n_trials):
            theory = float(rng.uniform(5, 50)) if kinky else np.nan
            rows.append({"study_spec": spec, "trial": trial, "theory_smp": theory,
                         "smp_out": theory * (1 + 0.02 * rng.standard_normal()) if kinky else 0.0})
    samples = pd.DataFrame(rows)
    g = samples.groupby("study_spec", sort=False)
    table = pd.DataFrame({
        "block_spec": specs,
        "smp_out": g["smp_out"].mean().to_numpy(),
        "smp_out_sem": (g["smp_out"].std(ddof=1) / np.sqrt(g.size())).to_numpy(),
        "theory_smp": g["theory_smp"].mean().to_numpy(),
        "creates_smp": [s not in ("tanh", "gelu") for s in specs],
    })
    return SourcesStudy(samples=samples, table=table)


def test_plot_sources_has_two_panels_labelled_by_block():
    study = tiny_study()
    fig = plot_sources(study)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    ax_bar, ax_scatter = fig.axes
    # first block at the top
    labels = [t.get_text() for t in ax_bar.get_yticklabels()]
    ticks = ax_bar.get_yticks()
    assert [labels[i] for i in np.argsort(-ticks)] == study.table["block_spec"].tolist()
    # one point set per block with a theory, plus the identity line
    legend = [t.get_text() for t in ax_scatter.get_legend().get_texts()]
    assert legend == ["relu", "maxpool1d(kernel_size=2)", "simulation = theory"]


@pytest.mark.filterwarnings("ignore:No artists with labels found:UserWarning")  # empty scatter panel: see report
@pytest.mark.parametrize(("with_kinky_blocks", "n_trials"), [(False, 3), (True, 1)])
def test_plot_sources_edge_cases(with_kinky_blocks, n_trials):
    """Only smooth blocks (empty scatter panel), or one trial per block (no standard error)."""
    fig = plot_sources(tiny_study(with_kinky_blocks, n_trials))
    assert isinstance(fig, Figure) and len(fig.axes) == 2


def test_plot_kinks_marks_the_kink_at_its_time():
    t = 1.0 + np.linspace(0.0, 1.0, 1001)  # the path does not start at 0
    y = np.abs(t - 1.3004)
    result = smpstats.smp(y, dt=t[1] - t[0])
    fig = plot_kinks(t, y, result, zoom=(1.25, 1.35))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    ax, ax_slope = fig.axes
    (marks,) = [line for line in ax.lines if line.get_marker() == "|"]
    np.testing.assert_allclose(marks.get_xdata(), [1.3004], atol=1e-3)
    assert marks.get_label() == "1 kinks (SMP 2)"
    assert ax_slope.get_title() == "slope jumps at the 1 kinks in this window"


def test_plot_kinks_of_a_smooth_signal():
    t = np.linspace(0.0, 1.0, 201)
    y = np.sin(3 * t)
    fig = plot_kinks(t, y, smpstats.smp(y, dt=t[1] - t[0]))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[1].get_title() == "slope jumps at the 0 kinks in this window"


def test_plot_refinement_has_one_panel_with_resolved_points():
    table = pd.DataFrame({"n_points": [513, 2049, 8193], "smp_total": [10.0, 20.0, 21.0],
                          "resolved": [False, True, True]})
    fig = plot_refinement(table)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert list(lines["resolved"].get_xdata()) == [2049, 8193]
    assert list(lines["not resolved"].get_xdata()) == [513]
