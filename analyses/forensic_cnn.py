"""Small CNN position regressors on synthetic images, and their output trajectories.

Used by ``forensic_validation.py``. Images are 32x32 renderings of a soft-edged
ellipse whose centre is the regression target. The rendering is an analytic
(infinitely differentiable) function of the centre, so a smooth centre path is
a smooth path in image space; nothing is piecewise linear in the motion except
what the network adds.

Two architectures of similar size and accuracy:

* ``relu``: conv-ReLU-maxpool x3, then a ReLU MLP head (piecewise linear);
* ``gelu``: conv-GELU-avgpool x3, then a GELU MLP head (smooth).

Trained models are cached (``state_dict`` files) in a cache folder, so that
re-running the study does not re-train.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGE_SIZE = 32


def render(centres: np.ndarray, axes: np.ndarray, angle: np.ndarray, edge: float = 0.7) -> np.ndarray:
    """Render soft ellipses; ``centres`` (n, 2) in pixels, ``axes`` (n, 2), ``angle`` (n,) radians.

    Returns an array of shape (n, IMAGE_SIZE, IMAGE_SIZE), float64 in [0, 1].
    """
    grid = np.arange(IMAGE_SIZE, dtype=np.float64)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    dx = xx[None] - centres[:, 0, None, None]
    dy = yy[None] - centres[:, 1, None, None]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (c * dx + s * dy) / axes[:, 0, None, None]
    v = (-s * dx + c * dy) / axes[:, 1, None, None]
    radius = np.sqrt(u**2 + v**2 + 1e-12)
    # Smooth edge in pixels: logistic of the signed distance to the boundary (approximately).
    distance = (radius - 1.0) * np.sqrt(axes[:, 0, None, None] * axes[:, 1, None, None])
    return 1.0 / (1.0 + np.exp(distance / edge))


def make_net(kind: str) -> nn.Module:
    """Return an untrained CNN: ``kind`` is 'relu' (ReLU + max pooling) or 'gelu' (GELU + average pooling)."""
    act = nn.ReLU if kind == "relu" else nn.GELU
    pool = nn.MaxPool2d if kind == "relu" else nn.AvgPool2d
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), act(), pool(2),
        nn.Conv2d(16, 32, 3, padding=1), act(), pool(2),
        nn.Conv2d(32, 32, 3, padding=1), act(), pool(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), act(), nn.Linear(64, 2),
    )


def _training_set(n: int, rng: np.random.Generator):
    centres = rng.uniform(8.0, 24.0, size=(n, 2))
    axes = rng.uniform(2.5, 5.0, size=(n, 2))
    angle = rng.uniform(0.0, np.pi, size=n)
    images = render(centres, axes, angle)
    return torch.tensor(images[:, None], dtype=torch.float32), torch.tensor((centres - 16.0) / 8.0, dtype=torch.float32)


def train(kind: str, seed: int, *, n_train: int = 12000, epochs: int = 12, log=print) -> tuple[nn.Module, float]:
    """Train one regressor; return the model (eval mode) and its test RMSE in pixels."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = _training_set(n_train, rng)
    xt, yt = _training_set(2000, rng)
    net = make_net(kind)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    start = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(n_train)
        net.train()
        for i in range(0, n_train, 128):
            idx = perm[i:i + 128]
            loss = ((net(x[idx]) - y[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            rmse = float(((net(xt) - yt) ** 2).mean().sqrt()) * 8.0
        log(f"  {kind} seed {seed} epoch {epoch + 1}/{epochs}: test RMSE {rmse:.3f} px "
            f"({time.perf_counter() - start:.0f} s)")
    return net.eval(), rmse


def load_or_train(kind: str, seed: int, cache: Path, log=print) -> tuple[nn.Module, float]:
    """Return a trained model from ``cache`` (training and saving it on first use) and its test RMSE."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"cnn_{kind}_{seed}.pt"
    if path.exists():
        state = torch.load(path, weights_only=True)
        net = make_net(kind)
        net.load_state_dict(state["model"])
        return net.eval(), float(state["rmse"])
    net, rmse = train(kind, seed, log=log)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": net.state_dict(), "rmse": rmse}, tmp)
    tmp.replace(path)
    return net, rmse


def smooth_centre_path(n_frames: int, rng: np.random.Generator, *, length_scale: float = 60.0,
                       amplitude: float = 3.0) -> np.ndarray:
    """Smooth centre path (n_frames, 2) in pixels: a squared-exponential GP (length scale in frames)."""
    from smpstats.processes import sample_se_gp

    return 16.0 + sample_se_gp(n_frames, 1.0, length_scale, sigma=amplitude, size=2, rng=rng).T


def trajectory(net: nn.Module, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Outputs (n_frames, 2) in pixels of ``net`` on the ellipse moving along ``centres`` (float64 forward)."""
    n = centres.shape[0]
    axes = np.broadcast_to(rng.uniform(3.0, 4.5, size=2), (n, 2))
    angle = np.full(n, rng.uniform(0.0, np.pi))
    images = torch.tensor(render(centres, axes, angle)[:, None], dtype=torch.float64)
    net64 = net.double()
    with torch.no_grad():
        out = net64(images).numpy() * 8.0 + 16.0
    net.float()
    return out
