"""Compiled per-series kernel of the grid estimator (:func:`smpstats.grid.smp`).

For each series, one call does at the step ``h`` and then at ``2 h`` what the
vectorised numpy estimator in :mod:`smpstats.grid` does for a block of
series: second differences, robust roughness and noise scales, candidate
kinks, the baseline across each run of candidates, and the peaks. It follows
the numpy estimator operation for operation (same formulas, same order of
floating-point operations and of summation), so both give the same numbers
(``tests/test_grid.py`` checks this). The series stays in cache between the
two steps, so each sample is read from memory once.

Every series is computed on its own (the kernel releases the GIL, so
:mod:`smpstats.grid` may run blocks of rows on several threads): results do
not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True)


@njit(**_JIT)
def _next_state(state):
    """One step of a 64-bit linear congruential generator (pivot positions)."""
    return state * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)


@njit(**_JIT)
def _select(work, n, k):
    """k-th smallest (0-based) of ``work[0, :n]``; ``work`` (3, >= n) is overwritten.

    Quickselect with out-of-place three-way partitions between the rows of
    ``work`` (no branches and no store-to-load chains in the inner loop),
    pivots the median of three entries at pseudo-random positions, and an
    insertion sort for the last few values.
    """
    src = 0
    state = np.uint64(0x9E3779B97F4A7C15)
    rounds = 0
    while n > 16:
        rounds += 1
        a = work[src]
        if rounds > 64:  # never reached in practice: bounded cost whatever the data
            return np.sort(a[:n])[k]
        state = _next_state(state)
        x = a[int(state >> np.uint64(33)) % n]
        state = _next_state(state)
        y = a[int(state >> np.uint64(33)) % n]
        state = _next_state(state)
        z = a[int(state >> np.uint64(33)) % n]
        if x < y:
            pivot = y if y < z else (z if x < z else x)
        else:
            pivot = x if x < z else (z if y < z else y)
        below, above = work[(src + 1) % 3], work[(src + 2) % 3]
        n_below = 0
        n_above = 0
        for j in range(n):
            v = a[j]
            below[n_below] = v
            above[n_above] = v
            n_below += v < pivot
            n_above += v > pivot
        if k < n_below:
            src, n = (src + 1) % 3, n_below
        elif k >= n - n_above:
            k -= n - n_above
            src, n = (src + 2) % 3, n_above
        else:
            return pivot
    a = work[src]
    for i in range(1, n):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v
    return a[k]


@njit(**_JIT)
def _quantile(work, n_valid, q):
    """Lower order statistic at ``q`` of ``work[0, :n_valid]`` (0 when empty), as ``grid._masked_quantile``."""
    if n_valid == 0:
        return 0.0
    k = int(math.floor(q * (n_valid - 1)))
    return _select(work, n_valid, max(k, 0))


@njit(cache=True, nogil=True, fastmath=True)
def _max_abs(y):
    """Largest |y| (exact in any order of evaluation, so vectorised freely)."""
    out = 0.0
    for v in y:
        out = max(out, abs(v))
    return out


@njit(**_JIT)
def _sign(r):
    """``np.sign``: NaN compares unequal to every sign."""
    if r > 0:
        return 1.0
    if r < 0:
        return -1.0
    if r == 0:
        return 0.0
    return math.nan


@njit(**_JIT)
def _scales(x, n, d, work, c_mad, c_noise_e, c_noise_d, n_windows):
    """(roughness, noise) of ``x[:n]`` with second differences ``d``: ``grid._roughness_and_noise``."""
    if n < 4:
        return 0.0, 0.0
    m = n - 2
    values = work[0]
    spacing = max(1, (n - 3) // n_windows)
    count = min(n_windows, -(-(n - 3) // spacing))
    # median |e| of the non-flat windows; flat ones count as -1 at even and +inf at odd positions
    n_kept = 0
    for w in range(count):
        c = w * spacing
        e = d[c + 1] - d[c]
        if d[c] == 0 and x[c] == x[c + 1] and e == 0:
            values[w] = -1.0 if w % 2 == 0 else math.inf
        else:
            values[w] = abs(e)
            n_kept += 1
    scale_e = c_mad * _select(work, count, count // 2) if n_kept > 0 else 0.0
    if n_kept < 0.25 * count and spacing > 1:  # few non-flat windows: use every sample
        n_valid = 0
        for c in range(m - 1):
            e = d[c + 1] - d[c]
            if not (d[c] == 0 and x[c] == x[c + 1] and e == 0):
                values[n_valid] = abs(e)
                n_valid += 1
        scale_e = c_mad * _quantile(work, n_valid, 0.5)
        step, spacing, count = 1, 1, m
    else:
        step = -(-count // 256)
    # low quantile of |d| over every step-th window (non-flat ones)
    n_valid = 0
    for w in range(0, count, step):
        c = w * spacing
        if not (d[c] == 0 and x[c] == x[c + 1]):
            values[n_valid] = abs(d[c])
            n_valid += 1
    noise = scale_e / c_noise_e
    # The low quantile matters only where it is small enough to show a noise-free signal; as
    # low_d -> low_d / divisor is monotone, counting the values that pass the test tells whether
    # the quantile does, and it is selected only then.
    divisor = 0.12566 * c_noise_d
    bound = 0.25 * noise
    n_pass = 0
    for i in range(n_valid):
        n_pass += values[i] / divisor < bound
    if n_pass > max(int(math.floor(0.1 * (n_valid - 1))), 0) or (n_valid == 0 and 0.0 < bound):
        noise_d = _quantile(work, n_valid, 0.1) / divisor
        if noise_d < bound:
            noise = noise_d
            scale_e = c_noise_e * noise_d
    return scale_e, noise


@njit(**_JIT)
def _jump_kept(d, c, n_e, t_cand, spike_fraction, large_jump):
    """Whether the jump ``e[c] = d[c + 1] - d[c]`` is large, or departs from the trend of the jumps two samples away."""
    e = d[c + 1] - d[c]
    if not (e > t_cand or e < -t_cand):
        return False
    size = abs(e)
    if c >= 2 and c < n_e - 2:
        deviation = abs(e - 0.5 * ((d[c - 1] - d[c - 2]) + (d[c + 3] - d[c + 2])))
    elif c >= 2:
        deviation = abs(e - (d[c - 1] - d[c - 2]))
    elif c < n_e - 2:
        deviation = abs(e - (d[c + 3] - d[c + 2]))
    else:
        deviation = size
    return deviation > spike_fraction * size or deviation > large_jump * t_cand


@njit(**_JIT)
def _add_run(runs, n_runs, c, m):
    """Add the samples [c - 1, c + 2] (clipped to [0, m - 1]) to the runs ``runs[:2 n_runs]`` (first, last pairs)."""
    first, last = max(c - 1, 0), min(c + 2, m - 1)
    if n_runs > 0 and first <= runs[2 * n_runs - 1] + 1:
        runs[2 * n_runs - 1] = max(runs[2 * n_runs - 1], last)
        return n_runs
    runs[2 * n_runs] = first
    runs[2 * n_runs + 1] = last
    return n_runs + 1


@njit(**_JIT)
def _series(x, n, dt, noise_given, noise_in, floor, threshold, background_factor, value_only, consts,
            d, flags, work, runs, resid, gid, g_mass, g_largest, g_spread, g_nsig, g_moment,
            peak_time, peak_jump, peak_snr, n_out):
    """Estimate of one series ``x[:n]`` at step ``dt``: ``grid._estimate`` for one row.

    Peaks go to ``peak_*[n_out:]`` (unless ``value_only``). Returns (value,
    n_peaks, n_below, n_sig, n_wide, roughness, noise used, t_sig, end of the
    peaks written), the last -1 when the peak buffers are full.
    """
    c_mad, c_noise_e, c_noise_d = consts[0], consts[1], consts[2]
    spike_fraction, large_jump, weak_sigma, noise_beyond = consts[3], consts[4], consts[5], consts[6]
    n_windows = int(consts[7])
    m = n - 2
    for j in range(m):
        d[j] = (x[j + 2] - x[j + 1]) - (x[j + 1] - x[j])
    scale_e, noise_est = _scales(x, n, d, work, c_mad, c_noise_e, c_noise_d, n_windows)
    noise_used = noise_in if noise_given else noise_est
    sigma_d = c_noise_d * noise_used
    t_sig = max(threshold * sigma_d, floor)
    t_cand = max(min(3.0 * max(scale_e, c_noise_e * noise_used), 0.8 * t_sig), floor)

    # 1. candidates: [c - 1, c + 2] around each kept jump e[c] = d[c + 1] - d[c], merged into runs.
    #    Inside the series the test is evaluated for every jump without branches (a vectorised
    #    loop into byte flags; its parts alone are often coin flips), then the flags are
    #    scanned eight at a time: kept jumps are rare.
    n_runs = 0
    n_e = m - 1
    for c in range(min(2, n_e)):
        if _jump_kept(d, c, n_e, t_cand, spike_fraction, large_jump):
            n_runs = _add_run(runs, n_runs, c, m)
    inner_end = max(n_e - 2, 2)
    flags[0] = 0
    flags[1] = 0
    for c in range(2, inner_end):
        e = d[c + 1] - d[c]
        deviation = abs(e - 0.5 * ((d[c - 1] - d[c - 2]) + (d[c + 3] - d[c + 2])))
        flags[c] = ((e > t_cand) | (e < -t_cand)) & ((deviation > spike_fraction * abs(e)) | (deviation > large_jump * t_cand))
    n_words = (inner_end + 7) // 8
    for c in range(inner_end, 8 * n_words):
        flags[c] = 0
    words = flags.view(np.uint64)
    for w in range(n_words):
        if words[w] != 0:
            for c in range(8 * w, 8 * w + 8):
                if flags[c]:
                    n_runs = _add_run(runs, n_runs, c, m)
    for c in range(max(2, n_e - 2), n_e):
        if _jump_kept(d, c, n_e, t_cand, spike_fraction, large_jump):
            n_runs = _add_run(runs, n_runs, c, m)
    if m == 1 and abs(d[0]) > t_sig:
        runs[0] = 0
        runs[1] = 0
        n_runs = 1

    # 2.-3. per run: baseline, residuals, groups of significant residuals
    n_groups = 0
    n_sig = 0
    n_below = 0
    for r in range(n_runs):
        a, b = runs[2 * r], runs[2 * r + 1]
        has_left = a >= 1
        has_right = b + 1 < m
        d_left = d[a - 1] if has_left else 0.0
        d_right = d[b + 1] if has_right else 0.0
        if not has_left:
            d_left = d_right if has_right else 0.0
        if not has_right:
            d_right = d_left
        has_outer_left = has_left and a >= 2
        has_outer_right = has_right and b + 2 < m
        e_left = d_left - d[a - 2] if has_outer_left else 0.0
        e_right = d[b + 2] - d_right if has_outer_right else 0.0
        span = float(b - a + 2)
        change = abs(e_left + e_right) * 4 if has_left != has_right else abs(e_right - e_left)
        change = max(change - noise_beyond * noise_used, 0.0)
        curved = change > 0 and has_outer_left and has_outer_right
        curvature = change * span / 8 * (0.25 if curved else 1.0)
        limit = t_sig + (background_factor * max(abs(d_left), abs(d_right)) + 2 * curvature)
        hermite_span = span if curved else 0.0
        length = b - a + 1
        largest = 0.0
        for j in range(length):
            u = (j + 1) / span
            u2 = u * u
            u3 = u * u * u
            linear = 2 * u3 - 3 * u2 + 1 if curved else 1 - u
            hermite = hermite_span * ((u3 - 2 * u2 + u) * e_left + (u3 - u2) * e_right)
            baseline = linear * d_left + (1 - linear) * d_right + hermite
            resid[j] = d[a + j] - baseline
            largest = max(largest, abs(resid[j]))
        if not largest > limit:  # no significant residual (most runs): no peak, perhaps a weak one
            if largest > weak_sigma * sigma_d:
                n_below += 1
            continue
        # A significant sample starts a group unless its same-sign left neighbour is significant;
        # a non-significant one joins its significant same-sign neighbour on the left, else on the right.
        prev_sig = False
        prev_sign = 0.0
        current = -1
        opened_for_next = False  # the previous sample opened `current` for this one
        for j in range(length):
            sig = abs(resid[j]) > limit
            sign = _sign(resid[j])
            adjacent = j > 0 and sign == prev_sign
            joined = False
            if sig:
                n_sig += 1
                if not (adjacent and prev_sig) and not opened_for_next:
                    current = n_groups
                    n_groups += 1
                    g_nsig[current] = 0
                g_nsig[current] += 1
                gid[j] = current
            elif adjacent and prev_sig:
                gid[j] = current
            elif j + 1 < length and abs(resid[j + 1]) > limit and _sign(resid[j + 1]) == sign:
                current = n_groups
                n_groups += 1
                g_nsig[current] = 0
                gid[j] = current
                joined = True
            else:
                gid[j] = -1
            opened_for_next = joined
            prev_sig = sig
            prev_sign = sign
        # sums in sample order, as np.bincount adds them
        weak = False
        any_member = False
        previous = -1
        for j in range(length):
            g = gid[j]
            rj = resid[j]
            if g < 0:
                if abs(rj) > weak_sigma * sigma_d:
                    weak = True
                continue
            if g != previous:
                g_mass[g] = 0.0
                g_largest[g] = 0.0
                g_spread[g] = 0.0
                g_moment[g] = 0.0
                previous = g
            any_member = True
            g_mass[g] += rj
            g_largest[g] = max(g_largest[g], abs(rj))
            g_spread[g] += abs(rj)
            g_moment[g] += rj * (float(a + j + 1) * dt)
        if weak and not any_member:
            n_below += 1

    # 4. peaks in order; a group of >= 3 significant samples whose largest holds < 40 % of its mass is curvature
    value = 0.0
    n_peaks = 0
    n_wide = 0
    for g in range(n_groups):
        if g_nsig[g] >= 3 and g_largest[g] < 0.4 * g_spread[g]:
            n_wide += 1
            continue
        mass = g_mass[g]
        if value_only:
            value += abs(mass) / dt
        else:
            k = n_out + n_peaks
            if k >= peak_time.shape[0]:
                return 0.0, 0, 0, 0, 0, scale_e, noise_used, t_sig, -1
            jump = mass / dt
            value += abs(jump)
            peak_time[k] = g_moment[g] / (mass if mass != 0 else 1.0)
            peak_jump[k] = jump
            peak_snr[k] = abs(mass) / sigma_d if sigma_d > 0 else math.inf
        n_peaks += 1
    return value, n_peaks, n_below, n_sig, n_wide, scale_e, noise_used, t_sig, n_out + (0 if value_only else n_peaks)


@njit(**_JIT)
def smp_rows(flat, dt, noise, noise_given, threshold, background_factor, with_coarse, consts, roundoff, start, stop,
             out_float, out_int, peak_series, peak_time, peak_jump, peak_snr, n_out):
    """Estimate rows ``start:stop`` of ``flat`` (n_series, n_times), C-contiguous, at ``dt`` and ``2 dt``.

    Writes per row ``out_float[i] = (value, roughness, noise used, t_sig,
    value at 2 dt, roughness at 2 dt, max |y|)`` and ``out_int[i] = (n_peaks,
    n_below, n_sig, n_wide)``, and appends its peaks to ``peak_*[n_out:]``.
    Returns (next row, peaks written): the next row is ``stop`` when done,
    earlier when the peak buffers are full (call again with larger ones).
    """
    n_times = flat.shape[1]
    size = max(n_times, 4)
    n_coarse = (n_times + 1) // 2
    x2 = np.empty(n_coarse)
    d = np.empty(size)
    flags = np.zeros(8 * (size // 8 + 2), dtype=np.uint8)
    work = np.empty((3, size))
    runs = np.empty(2 * size, dtype=np.int64)
    resid = np.empty(size)
    gid = np.empty(size, dtype=np.int64)
    g_mass = np.empty(size)
    g_largest = np.empty(size)
    g_spread = np.empty(size)
    g_nsig = np.empty(size, dtype=np.int64)
    g_moment = np.empty(size)
    for i in range(start, stop):
        y = flat[i]
        scale_y = _max_abs(y)
        floor = roundoff * scale_y
        value, n_peaks, n_below, n_sig, n_wide, rough, noise_used, t_sig, end = _series(
            y, n_times, dt, noise_given, noise[i], floor, threshold, background_factor, False, consts,
            d, flags, work, runs, resid, gid, g_mass, g_largest, g_spread, g_nsig, g_moment,
            peak_time, peak_jump, peak_snr, n_out)
        if end < 0:
            return i, n_out
        peak_series[n_out:end] = i
        n_out = end
        out_float[i, 0] = value
        out_float[i, 1] = rough
        out_float[i, 2] = noise_used
        out_float[i, 3] = t_sig
        out_float[i, 6] = scale_y
        out_int[i, 0] = n_peaks
        out_int[i, 1] = n_below
        out_int[i, 2] = n_sig
        out_int[i, 3] = n_wide
        if with_coarse:
            for j in range(n_coarse):
                x2[j] = y[2 * j]
            value2, _, _, _, _, rough2, _, _, _ = _series(
                x2, n_coarse, 2 * dt, True, noise_used, floor, threshold, background_factor, True, consts,
                d, flags, work, runs, resid, gid, g_mass, g_largest, g_spread, g_nsig, g_moment,
                peak_time, peak_jump, peak_snr, n_out)
            out_float[i, 4] = value2
            out_float[i, 5] = rough2
    return stop, n_out
