"""``smpstats demo``: the default study, written as a small report folder.

Sections:
1. Sources of nonsmoothness (:func:`smpstats.studies.sources_of_nonsmoothness`):
   which blocks create SMP from smooth inputs, simulation beside theory.
2. A small convolutional network along a smooth Gaussian-process path: SMP per
   output component with the resolution check, and the grid estimate against
   the step.
3. Forensics (:func:`smpstats.assess`): the network's output trajectory, its
   smooth twin's, and the twin's plus matched white noise.
4. Per-block transfer models (:func:`smpstats.fit`, :func:`smpstats.check`):
   theory and regression tiers (and the Bayesian tier with ``bayes=True``)
   fitted to simulated ReLU, max-pool and affine blocks and checked on
   held-out configurations.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_write, save_figure, save_samples

__all__ = ["run_demo", "DEMO_CHAIN"]

logger = logging.getLogger(__name__)

#: The network measured in section 2 (input shape (4, 64)).
DEMO_CHAIN = (
    "conv1d(out_channels=8,kernel_size=5)|relu|maxpool1d(kernel_size=2)|"
    "conv1d(out_channels=8,kernel_size=3)|relu|linear(out_features=3)"
)
_DEMO_INPUT_SHAPE = (4, 64)


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text.encode("utf-8"))


def _markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    return df.to_markdown(index=False, floatfmt=floatfmt)


#: The smooth twin of DEMO_CHAIN used in the forensic section.
DEMO_SMOOTH_CHAIN = DEMO_CHAIN.replace("relu", "gelu").replace("maxpool1d", "avgpool1d")


def _forensic_section(path, seed: int, out: Path) -> pd.DataFrame:
    """Assess the ReLU network's, its smooth twin's and a noisy smooth track's trajectories."""
    from .blocks import build_chain
    from .forensic_plots import plot_report
    from .forensic_stats import difference_variance
    from .forensics import assess
    from .measurement import measure

    tracks = {}
    for name, spec in (("ReLU network", DEMO_CHAIN), ("GELU twin", DEMO_SMOOTH_CHAIN)):
        chain = build_chain(spec, _DEMO_INPUT_SHAPE, generator=seed)
        tracks[name] = measure(chain, path, 400, keep_outputs=True, progress=False).outputs
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(difference_variance(tracks["ReLU network"].T, 1) / 6.0)
    tracks["GELU twin + matched noise"] = tracks["GELU twin"] + sigma * rng.standard_normal(tracks["GELU twin"].shape)
    rows = []
    for name, track in tracks.items():
        report = assess(track, seed=seed)
        lo, hi = report.log_bayes_factor_interval
        rows.append({"trajectory": name, "verdict": report.verdict, "posterior": report.posterior_nonsmooth,
                     "log_bayes_factor": report.log_bayes_factor, "log_bf_90%": f"{lo:.2f} to {hi:.2f}",
                     "p_value_smooth": report.p_value_smooth, "fits_smooth": report.fits_smooth,
                     "fits_network": report.fits_network})
        if name == "ReLU network":
            save_figure(plot_report(report), out / "forensic.png")
        logger.info("demo: forensic assessment of %s", name)
    return pd.DataFrame(rows)


#: Block families of the transfer-model section.
DEMO_FAMILIES = ("relu", "maxpool", "affine")


def _transfer_section(n_trials: int, seed: int, out: Path, bayes: bool, progress: bool) -> tuple[pd.DataFrame, str]:
    """Fit transfer models on training configurations, check them on held-out ones; (coverage table, notes)."""
    from .checks import check
    from .training_data import block_samples
    from .transfer import fit
    from .transfer_plots import plot_bands, plot_coverage

    n_train = max(n_trials, 8)  # the regression needs 8 rows per family
    train = block_samples(DEMO_FAMILIES, "train", n_trials=n_train, seed=seed, progress=progress)
    holdout = block_samples(DEMO_FAMILIES, "holdout", n_trials=max(n_train // 2, 5), seed=seed + 1, progress=progress)
    save_samples(train, out / "transfer_train.parquet", metadata={"study": "demo transfer models", "split": "train"})
    save_samples(holdout, out / "transfer_holdout.parquet", metadata={"study": "demo transfer models", "split": "holdout"})
    tables, notes = [], []
    for kind in ("theory", "regression") + (("bayes",) if bayes else ()):
        model = fit(train, kind=kind)
        report = check(model, holdout)
        tables.append(report.table.assign(tier=kind))
        if kind == "regression":
            model.save(out / "transfer_regression.json")
            for fam in DEMO_FAMILIES:
                save_figure(plot_bands(report, fam), out / f"transfer_bands_{fam}.png")
            save_figure(plot_coverage(report), out / "transfer_coverage.png")
        if kind == "bayes":
            model.save(out / "transfer_bayes.nc")
            notes.append(model.summary())
        logger.info("demo: %s transfer model checked", kind)
    cols = ["tier", "family", "n", "mean_rel_error", "theory_rel_error", "coverage_50", "coverage_90", "coverage_95",
            "crps"]
    return pd.concat(tables, ignore_index=True)[cols], "\n".join(notes)


def _chain_trials(n_trials: int) -> int:
    """Simulated networks of section 5 (an exact walk costs about a second per network)."""
    return max(n_trials // 2, 10)


def _chain_section(n_trials: int, seed: int, out: Path, progress: bool) -> pd.DataFrame:
    """Predict the demo network's SMP per stage (theory and default regression models) and compare with
    exactly measured simulated networks; returns the comparison table."""
    from .chain_prediction import predict_chain
    from .plotting import plot_chain_prediction
    from .simulation import simulate

    sim = simulate(DEMO_CHAIN, _chain_trials(n_trials), seed=seed + 2, input_shape=_DEMO_INPUT_SHAPE, n_points=513,
                   method="exact", progress=progress)
    save_samples(sim, out / "chain_samples.parquet", metadata={"study": "demo chain prediction"})
    tables = []
    for kind in ("theory", "regression"):
        pred = predict_chain(DEMO_CHAIN, input_shape=_DEMO_INPUT_SHAPE, model=kind, n_draws=2000, seed=seed)
        tables.append(pred.check(sim).assign(model=kind))
        fig = plot_chain_prediction(pred, sim)
        save_figure(fig, out / f"chain_{kind}.png")
        logger.info("demo: chain predicted with the %s model", kind)
    cols = ["model", "stage", "block", "predicted", "simulated", "ratio", "se_simulated", "coverage_50",
            "coverage_90", "crps"]
    return pd.concat(tables, ignore_index=True)[cols]


def run_demo(out_dir: str | Path = "smpstats-demo", *, n_trials: int = 40, seed: int = 0,
             progress: bool = True, bayes: bool = False) -> Path:
    """Run the default study and write ``report.md`` with figures and tables.

    Parameters
    ----------
    out_dir : str or path, default="smpstats-demo"
        Folder for the report (created if needed; files in it are replaced
        atomically, other files are left alone).
    n_trials : int, default=40
        Trials per block in section 1.
    seed : int, default=0
        Root seed of the whole demo.
    progress : bool, default=True
        Show progress bars.
    bayes : bool, default=False
        Also fit and check the Bayesian transfer tier (PyMC compiles the
        model on first use: minutes).

    Returns
    -------
    pathlib.Path
        Path of ``report.md``.
    """
    from .blocks import build_chain
    from .measurement import measure
    from .paths import GaussianProcessPath
    from .plotting import plot_kinks, plot_refinement, plot_sources
    from .studies import sources_of_nonsmoothness

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    # 1. sources of nonsmoothness
    study = sources_of_nonsmoothness(n_trials=n_trials, seed=seed, progress=progress)
    save_samples(study.samples, out / "sources_samples.parquet", metadata={"study": "sources_of_nonsmoothness"})
    table = study.table[["block_spec", "n_trials", "smp_out", "smp_out_sem", "smp_out_rel", "kinks_out",
                         "theory_smp", "rel_error", "resolved_out", "creates_smp"]]
    with atomic_write(out / "sources_table.csv") as fh:
        fh.write(table.to_csv(index=False).encode("utf-8"))
    save_figure(plot_sources(study), out / "sources.png")

    # 2. a small network along a smooth path, at growing resolution
    chain = build_chain(DEMO_CHAIN, _DEMO_INPUT_SHAPE, generator=seed)
    path = GaussianProcessPath(_DEMO_INPUT_SHAPE, length_scale=0.25, seed=seed)
    rows = []
    results = {}
    for n_points in (513, 2049, 8193, 32769):
        res = measure(chain, path, n_points, keep_outputs=True, progress=False)
        results[n_points] = res
        rows.append({"n_points": n_points, "dt": res.dt, "smp_total": res.total,
                     "kinks_total": int(np.sum(res.smp.n_peaks)), "resolved": bool(np.all(res.resolved))})
        logger.info("demo: measured %s at %d points", DEMO_CHAIN, n_points)
    refinement = pd.DataFrame(rows)
    save_figure(plot_refinement(refinement), out / "refinement.png")
    finest = results[max(results)]
    per_component = finest.to_frame()
    comp = 0
    from .grid import smp

    fig = plot_kinks(finest.t, finest.outputs[:, comp], smp(finest.outputs[:, comp], dt=finest.dt),
                     label=f"output component {comp}")
    fig.axes[0].set_title(f"{DEMO_CHAIN}\nalong a smooth Gaussian-process path ({max(results)} points)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "network_output.png")

    # 3. forensic assessment of output trajectories
    forensic_table = _forensic_section(path, seed, out)

    # 4. per-block transfer models
    transfer_table, transfer_notes = _transfer_section(n_trials, seed, out, bayes, progress)

    # 5. the network's SMP predicted per stage, against simulated networks
    chain_table = _chain_section(n_trials, seed, out, progress)

    elapsed = time.perf_counter() - started
    from . import __version__

    kink_blocks = ", ".join(study.table.loc[study.table["creates_smp"], "block_spec"])
    smooth_blocks = ", ".join(study.table.loc[~study.table["creates_smp"], "block_spec"])
    with_theory = study.table[study.table["theory_smp"].notna()]
    report = f"""# smpstats demo report

smpstats {__version__}, seed {seed}, {elapsed:.0f} s on this machine.

## 1. Which building blocks create nonsmoothness

Each block was simulated {n_trials} times with fresh weights on smooth inputs
(independent squared-exponential Gaussian processes per input unit, with
mean, std and length scale drawn per trial; path length 1, 512 points). The
table gives the mean output SMP per unit, its standard error (it varies
with each trial's input statistics), the SMP relative to the input slope
scale sigma' T, and for the
rectifiers and max pooling the theory of DESIGN §4 (Kac-Rice; pairwise
switching over i.i.d. inputs), evaluated at each trial's exact input
statistics.

- **Create SMP:** {kink_blocks or "none"}
- **Create none (SMP 0 within noise):** {smooth_blocks or "none"}
- Theory against simulation: relative error of the mean between
  {with_theory['rel_error'].abs().min():.1%} and {with_theory['rel_error'].abs().max():.1%}.

{_markdown(table)}

![sources](sources.png)

## 2. A small network along a smooth path

`{DEMO_CHAIN}` (input shape {_DEMO_INPUT_SHAPE}, Kaiming init) along a
smooth Gaussian-process path (length scale 0.25 on t in [0, 1]), measured
with the grid estimator at growing resolution. `resolved` says whether the
estimate holds when the step is doubled; unresolved estimates are lower
bounds.

{_markdown(refinement)}

Per output component at {max(results)} points:

{_markdown(per_component)}

![refinement](refinement.png)

![network output](network_output.png)

## 3. Forensics: network or smooth track plus noise?

The same network and a smooth twin (GELU and average pooling in place of
ReLU and max pooling) along the same path, recorded at 400 frames, and the
smooth twin's output plus white noise matched to the ReLU output's
frame-to-frame roughness (same mean square of second differences), each
assessed with `smpstats.assess` (prior odds 1). `fits_*` say whether each
hypothesis predicts statistics like the observed ones.

{_markdown(forensic_table)}

![forensic](forensic.png)

## 4. Per-block transfer models

Samples of ReLU, max-pool and affine (conv, linear) blocks over several
block configurations ({max(n_trials, 8)} trials each; `smpstats.block_samples`) were
used to fit the theory and regression tiers{" and the Bayesian tier" if bayes else ""}
(`smpstats.fit`), which were then checked on held-out configurations and
seeds the fits never saw (`smpstats.check`): error of the mean, coverage of
central predictive intervals (target for 90 %: 85-95 %) and CRPS. The theory
tier has no spread, so its intervals cover almost nothing; it is the mean
structure the statistical tiers correct.

{_markdown(transfer_table, ".3f")}

{"```" + chr(10) + transfer_notes + chr(10) + "```" if transfer_notes else ""}

![coverage](transfer_coverage.png)

![relu](transfer_bands_relu.png)

![maxpool](transfer_bands_maxpool.png)

![affine](transfer_bands_affine.png)

## 5. Predicting a whole network

The network of section 2, predicted stage by stage without simulating it
(`smpstats.predict_chain`: mean-field moments of one finite network per
draw, kink multiplicity, each path's own kink events, and per block the
theory or the default regression models shipped with the package), against {_chain_trials(n_trials)} simulated networks of the same architecture
(fresh weights and smooth inputs each; exact SMP along the path). `ratio`
is predicted over simulated mean SMP per unit; coverage is the share of
simulated networks inside the predicted central intervals.

{_markdown(chain_table, ".3g")}

![chain theory](chain_theory.png)

![chain regression](chain_regression.png)

## Next steps

- `smpstats predict SPEC --model regression --compare 100 --figure f.png`
  predicts your own chain and checks it against simulated networks.

- `smpstats forensic FILE.csv --figure f.png` assesses your own trajectory
  (one column per component).

- `smpstats simulate SPEC --trials N --out samples.parquet` collects samples
  for your own blocks; `smpstats measure --spec SPEC --input-shape ...`
  measures a network along a path.
- `smpstats samples --out train.parquet`, `smpstats fit train.parquet --kind bayes
  --out fit.nc` and `smpstats check fit.nc --holdout holdout.parquet --figures checks`
  fit and check transfer models of all block families.
- The tables of this report: `sources_table.csv`, `sources_samples.parquet`
  (read with `smpstats.load_samples`).
"""
    report_path = out / "report.md"
    _write_text(report_path, report)
    return report_path
