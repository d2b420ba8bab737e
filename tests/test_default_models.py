"""Default transfer models: shipped, or built on first use and cached."""

import pytest

import smpstats
from smpstats import default_models
from smpstats.errors import InputError


@pytest.fixture
def empty_package(tmp_path, monkeypatch):
    """No shipped models, a fresh cache folder and small training samples."""
    monkeypatch.setattr(default_models, "_SHIPPED", tmp_path / "shipped")
    monkeypatch.setenv("SMPSTATS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(default_models.DEFAULT_TRAINING, "n_trials", 8)
    monkeypatch.setitem(default_models.DEFAULT_TRAINING, "n_points", 256)
    return tmp_path / "cache"


def test_built_on_first_use_then_loaded_from_the_cache(empty_package, monkeypatch):
    model = smpstats.default_model("regression", progress=False)
    cached = default_models.cached_path("regression")
    assert cached.parent == empty_package and cached.is_file() and model.kind == "regression"
    # the second call loads the file: no simulation
    monkeypatch.setattr("smpstats.training_data.block_samples",
                        lambda *a, **k: pytest.fail("simulated again instead of loading the cache"))
    again = smpstats.default_model("regression")
    assert again.to_dict() == model.to_dict()


def test_an_unusable_cached_file_is_rebuilt(empty_package, caplog):
    empty_package.mkdir(parents=True)
    cached = default_models.cached_path("regression")
    cached.write_text('{"format": "something else"}')
    model = smpstats.default_model("regression", progress=False)
    assert model.kind == "regression" and "building it again" in caplog.text
    assert smpstats.load_model(cached).to_dict() == model.to_dict()


def test_other_training_samples_build_their_own_cached_model(empty_package, monkeypatch):
    first = default_models.cached_path("bayes")
    monkeypatch.setitem(default_models.DEFAULT_TRAINING, "n_trials", 9)
    assert default_models.cached_path("bayes") != first
    monkeypatch.setitem(default_models.DEFAULT_TRAINING, "n_trials", 8)
    assert default_models.cached_path("bayes") == first
    # so do other training configurations
    from smpstats import training_data

    monkeypatch.setitem(training_data.CONFIGS, "relu", {"train": (), "holdout": ()})
    assert default_models.cached_path("bayes") != first


def test_bad_kind():
    with pytest.raises(InputError, match="default models exist for kind 'regression' or 'bayes'; got 'theory'"):
        smpstats.default_model("theory")


@pytest.mark.slow
def test_bayes_default_is_built_and_cached(empty_package):
    model = smpstats.default_model("bayes", progress=False)
    assert default_models.cached_path("bayes").is_file() and model.kind == "bayes"
    pred = smpstats.predict_chain("linear(out_features=8) | relu | linear(out_features=8)", input_shape=(8,),
                                  model="bayes", n_draws=100)
    assert pred.kind == "bayes" and (pred.draws >= 0).all() and (pred.draws[1:].mean(axis=1) > 0).all()
    assert smpstats.default_model("bayes").to_frame().equals(model.to_frame())  # loaded from the cache
