"""Package-level behaviour: cheap lazy import, public names, no module shadowing."""

import subprocess
import sys

import smpstats


def test_import_is_cheap_and_side_effect_free():
    code = "import sys, smpstats; print(sorted(m for m in ('torch', 'matplotlib', 'pandas', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_every_public_name_resolves():
    for name in smpstats.__all__:
        assert getattr(smpstats, name) is not None


def test_functions_are_not_shadowed_by_submodules():
    import smpstats.grid  # noqa: F401
    import smpstats.measurement  # noqa: F401
    import smpstats.simulation  # noqa: F401

    for name in ("smp", "measure", "simulate", "parse_spec", "save_samples"):
        assert callable(getattr(smpstats, name)) and not isinstance(getattr(smpstats, name), type(smpstats))


def test_unknown_attribute_raises_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="module 'smpstats' has no attribute 'smpp'"):
        smpstats.smpp  # noqa: B018
