"""Shared test settings."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread per test process: pytest-xdist already runs one process per core, and
    small float64 forward passes slow down badly when threads of several processes fight for cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
