r"""State-space decoding on a grid: the naive-Bayes likelihood with a transition prior over time.

The variable follows a Markov chain on the grid's visited cells. With a random-walk prior the
transition is a Gaussian kernel :math:`K` of the displacement, confined to visited cells
(:math:`m_j = 1` on visited cells) and normalised per starting cell,

.. math::

    A_{ij} = \frac{K(s_j - s_i)\, m_j}{Z_i}, \qquad Z_i = \sum_j K(s_j - s_i)\, m_j ,

so the prediction :math:`\sum_i f_i A_{ij} = m_j\,(K * (f / Z))_j` and the backward message
:math:`\sum_j A_{ij} \ell_j \beta_j = (K * (m \ell \beta))_i / Z_i` are convolutions: each costs
:math:`O(G \log G)` by FFT (zero-padded on linear axes, periodic on circular ones), not the
:math:`O(G^2)` of a dense transition matrix. The forward pass gives the filtered (causal)
posterior, forward-backward the smoothed one; each trial or block of the data (its
``segment_ids``) starts afresh from the prior. A learned dense transition (``"empirical"``:
counted cell-to-cell moves of the training variable plus the random walk as pseudo-counts) is
available at :math:`O(G^2)` per bin.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special, stats

from bayesneuro._jit import jit

from .._pynapple import pynapple_io
from ._base import attach_index
from .grid import Grid
from .naive_bayes import (
    _CHUNK,
    NaiveBayesDecoder,
    count_terms_total,
    likelihood_rows,
    log_posterior,
)
from .posterior import GridPosterior

_SCAN_CHUNK = 16384
EVIDENCE_MULTIPLES = (0.5, 1.0, 2.0, 4.0, 8.0)
#: What the temperature divides: the smoothed (or filtered) log posterior, or the log likelihood.
TEMPERINGS = ("posterior", "likelihood")


# ------------------------------------------------------------------------- transition kernels
TRUNCATE = 4.0  # the random-walk kernel is truncated 4 sd beyond the neighbouring cell
_DIRECT_TAPS_PER_LOG2 = 20  # an axis of n cells is convolved directly up to 20 log2(2n) taps, wider by FFT


def _direct(n_taps: int, n: int) -> bool:
    """Direct convolution or FFT for a kernel of `n_taps` on an axis of `n` cells.

    The direct sum costs ``n x taps``, the FFT about ``n log2(2n)`` with a larger constant; on a
    CPU the two cross near ``20 log2(2n)`` taps (about 230 taps on 1,600 cells: 22 us against
    40 us per filtering step with 131 taps, ``bench/decode.py``).
    """
    return n_taps <= _DIRECT_TAPS_PER_LOG2 * np.log2(2 * n)


def _half_width(n: int, width: float, sigma: float, circular: bool) -> int:
    """Kernel half-width in cells: every cell a step of up to TRUNCATE sd can reach from anywhere
    in the starting cell (at least the neighbours when ``sigma > 0``), at most the grid's extent."""
    w = int(np.ceil(TRUNCATE * sigma / width - 1e-9)) + 1 if sigma > 0 else 0
    return min(w, n // 2 if circular else n - 1)


def _box_gauss(y: np.ndarray, sigma: float) -> np.ndarray:
    r"""``F(-y)`` for ``y >= 0``, where ``F(x) = ∫_{-∞}^x Φ(t / σ) dt = x Φ(x/σ) + σ φ(x/σ)``."""
    z = y / sigma
    return sigma * (stats.norm.pdf(z) - z * stats.norm.sf(z))


def _axis_taps(n: int, width: float, sigma: float, circular: bool) -> np.ndarray:
    r"""Kernel values at offsets ``-W..W`` cells on one axis.

    The probability that a Gaussian step of sd `sigma` from a point uniform in a cell lands in
    the cell `j` cells away: the step density integrated over the destination cell and averaged
    over the starting one, ``(F((j+1)w) - 2 F(jw) + F((j-1)w)) / w`` with ``F`` the integral of
    the Gaussian CDF (:func:`_box_gauss`). Unlike the density at cell centres it never leaves a
    cell without mass to its neighbours, however small the step.
    """
    W = _half_width(n, width, sigma, circular)
    off = np.arange(-W, W + 1)
    if sigma == 0:
        return (off == 0).astype(np.float64)
    j = np.abs(off).astype(np.float64)
    # for j >= 1 every argument is >= 0 and F(x) = x + F(-x) cancels the linear parts exactly
    side = (_box_gauss((j + 1) * width, sigma) - 2 * _box_gauss(j * width, sigma)
            + _box_gauss(np.abs(j - 1) * width, sigma)) / width
    centre = 1.0 + 2.0 * (_box_gauss(width, sigma) - _box_gauss(0.0, sigma)) / width
    taps = np.maximum(np.where(j == 0, centre, side), 0.0)
    if circular and n % 2 == 0 and W == n // 2:
        taps[-1] = 0.0  # offsets +n/2 and -n/2 are the same cell on a ring: count it once
    return taps


def _sigmas(grid: Grid, sigma: Any) -> np.ndarray:
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (grid.n_dim,))
    if np.any(sig < 0) or not np.all(np.isfinite(sig)):
        raise ValueError(f"random-walk sigma must be finite and >= 0, got {sigma}")
    return sig


def kernel_offsets(grid: Grid, sigma: Any, k: int) -> np.ndarray:
    """Kernel value for every signed cell offset ``-(n-1)..(n-1)`` on axis `k` (0 beyond the taps)."""
    sig = _sigmas(grid, sigma)
    n = grid.shape[k]
    taps = _axis_taps(n, grid.widths[k], sig[k], grid.circular[k])
    W = taps.size // 2
    full = np.zeros(2 * n - 1)
    full[n - 1 - W : n + W] = taps
    return full


def dense_transition(grid: Grid, sigma: Any, visited: np.ndarray) -> np.ndarray:
    """The ``(G, G)`` transition matrix of the random walk (the dense form, for checks)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1).reshape(-1, grid.n_dim)
    K = np.ones((grid.n_cells, grid.n_cells))
    for k, (n, c) in enumerate(zip(grid.shape, grid.circular)):
        d = idx[None, :, k] - idx[:, None, k]
        if c:
            d = np.mod(d + n // 2, n) - n // 2  # into [-n/2, n/2): each ring offset once
        K *= kernel_offsets(grid, sigma, k)[d + n - 1]
    A = K * np.asarray(visited, dtype=np.float64)[None, :]
    Z = A.sum(axis=1, keepdims=True)
    return np.where(Z > 0, A / np.where(Z > 0, Z, 1.0), 0.0)


class _SeparableConv:
    """Convolution of ``grid.shape`` fields with a separable truncated-Gaussian kernel.

    Each axis of ``n`` cells is convolved directly (``O(G W)``) when its kernel has at most
    ``20 log2(2n)`` taps, otherwise by FFT (``O(G log G)``); linear axes are zero-padded, circular
    ones wrap.
    """

    def __init__(self, grid: Grid, sigma: Any, dtype):
        sig = _sigmas(grid, sigma)
        self.shape = grid.shape
        # Equal grids, steps and dtypes give equal objects, so a compiled program is reused.
        self._key = (grid.shape, grid.circular, tuple(grid.widths.tolist()), tuple(sig.tolist()), str(dtype))
        self.ops = []
        for k, (n, c) in enumerate(zip(grid.shape, grid.circular)):
            taps = _axis_taps(n, grid.widths[k], sig[k], c)
            W = taps.size // 2
            if W == 0:
                continue  # a delta kernel: identity on this axis
            if _direct(taps.size, n):
                self.ops.append(("direct", k, W, c, jnp.asarray(taps[::-1].copy(), dtype)))
            else:
                L = n if c else 2 * n
                lay = np.zeros(L)
                off = np.arange(-W, W + 1)
                np.add.at(lay, np.mod(off, L), taps)
                self.ops.append(("fft", k, L, c, jnp.fft.rfft(jnp.asarray(lay, dtype))))
        # direct sums of non-negative terms stay non-negative; FFT round-off can dip below 0
        self.nonnegative = all(op[0] == "direct" for op in self.ops)

    def __call__(self, x):
        """Convolve one field (any shape holding ``G`` values) or a batch ``(P, G)``: returns ``(P,) + shape``."""
        x = x.reshape((-1,) + self.shape)
        for kind, k, p, circ, ker in self.ops:
            x = jnp.moveaxis(x, k + 1, -1)
            lead = x.shape[:-1]
            n = x.shape[-1]
            flat = x.reshape((-1, n))
            if kind == "direct":
                W = p
                padded = jnp.pad(flat, ((0, 0), (W, W)), mode="wrap" if circ else "constant")
                y = jax.lax.conv_general_dilated(
                    padded[:, None, :], ker[None, None, :], window_strides=(1,), padding="VALID"
                )[:, 0, :]
            else:
                L = p
                y = jnp.fft.irfft(jnp.fft.rfft(flat, n=L, axis=-1) * ker, n=L, axis=-1)[:, :n]
            x = jnp.moveaxis(y.reshape(lead + (n,)), -1, k + 1)
        return x

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _SeparableConv) and self._key == other._key


# ------------------------------------------------------------------------- forward-backward
def _scaled(ll, mask):
    """Likelihood rows, zero off the visited cells, divided by their maxima; and the log maxima."""
    ll = jnp.where(mask > 0, ll, -jnp.inf)
    row_max = jnp.max(ll, axis=1)
    return jnp.exp(ll - row_max[:, None]), row_max


def _filter_step(conv, inv_z, init):
    """The forward step ``(f_{t-1}, (l_t, start_t)) -> f_t``: predict by the transition (or restart
    from ``init`` at a segment's first bin), weight by the scaled likelihood, normalise; it also
    emits the normaliser ``c_t``."""

    def step(f_prev, inp):
        l, st = inp
        pred = conv(f_prev * inv_z).reshape(-1)
        if not conv.nonnegative:
            pred = jnp.maximum(pred, 0.0)
        u = l * jnp.where(st, init, pred)
        c = jnp.sum(u)
        f = u * (1.0 / c)  # one division, not G
        return f, (f, c)

    return step


def _smooth_step(conv, inv_z):
    """The backward step ``(l_{t+1} beta_{t+1}, (l_t, end_t)) -> l_t beta_t``, emitting ``beta_t``
    scaled to a maximum of 1 (1 at a segment's last bin)."""

    def step(msg, inp):
        l, e = inp
        beta = conv(msg).reshape(-1) * inv_z
        if not conv.nonnegative:
            beta = jnp.maximum(beta, 0.0)
        beta = jnp.where(e, 1.0, beta * (1.0 / jnp.max(beta)))
        return l * beta, beta

    return step


@partial(jit, static_argnames=("conv",))
def _forward_chunk(conv, mask, inv_z, init, ll, start, real, carry0):
    """Filtered probabilities of one chunk of bins, and its log evidence.

    ``ll`` (t, G) log likelihoods; ``start`` marks the first bin of each segment; ``real``
    marks bins that are not padding.
    """
    lik, row_max = _scaled(ll, mask)  # zero off the visited cells: it applies the mask
    last, (filt, c) = jax.lax.scan(_filter_step(conv, inv_z, init), carry0, (lik, start), unroll=4)
    log_ev = jnp.sum(jnp.where(real, jnp.log(c) + row_max, 0.0))
    n_bad = jnp.sum(real & ~jnp.isfinite(row_max))
    n_zero = jnp.sum(real & jnp.isfinite(row_max) & ~(c > 0))
    return last, filt, log_ev, n_bad, n_zero


@partial(jit, static_argnames=("conv_f", "conv_b"))
def _pair_chunk(conv_f, conv_b, mask, inv_z, init, ll_f, start, real, carry_f, ll_b, end, msg0):
    """One forward chunk and one backward chunk in the same loop (half the sequential steps).

    The two recursions are independent given the likelihood: the forward pass runs over chunk
    ``ll_f`` from its first bin, the backward pass over chunk ``ll_b`` from its last bin.
    Returns the forward outputs of :func:`_forward_chunk` and the backward messages ``beta``.
    """
    lik_f, row_max = _scaled(ll_f, mask)
    lik_b, _ = _scaled(ll_b, mask)
    fstep, bstep = _filter_step(conv_f, inv_z, init), _smooth_step(conv_b, inv_z)

    def step(carry, inp):
        f, (f_out, c) = fstep(carry[0], inp[:2])
        msg, beta = bstep(carry[1], inp[2:])
        return (f, msg), (f_out, c, beta)

    (last, first), (filt, c, beta) = jax.lax.scan(
        step, (carry_f, msg0), (lik_f, start, lik_b[::-1], end[::-1]), unroll=4
    )
    log_ev = jnp.sum(jnp.where(real, jnp.log(c) + row_max, 0.0))
    n_bad = jnp.sum(real & ~jnp.isfinite(row_max))
    n_zero = jnp.sum(real & jnp.isfinite(row_max) & ~(c > 0))
    return last, filt, log_ev, n_bad, n_zero, first, beta[::-1]


@jit
def _smoothed(filt, beta):
    g = filt * beta
    return jnp.log(g) - jnp.log(jnp.sum(g, axis=1, keepdims=True))


@jit
def _log(x):
    return jnp.log(x)


class _DenseConv:
    """Stands in for the convolution with a dense transition: ``x -> x @ A`` or ``A @ x``."""

    def __init__(self, A, transpose: bool):
        self.A = A
        self.transpose = transpose
        self.nonnegative = True  # a product of non-negative arrays
        a = np.asarray(A)
        self._key = (a.shape, str(a.dtype), hashlib.sha1(a.tobytes()).hexdigest(), transpose)

    def __call__(self, x):
        flat = x.reshape((-1, self.A.shape[0]))  # (P, G): a batch of messages
        return flat @ self.A.T if self.transpose else flat @ self.A

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _DenseConv) and self._key == other._key


BLOCK = 256  # bins per block of the blocked recursion
_RTOL, _ATOL = 1e-12, 1e-15  # agreement of the normalised messages at block boundaries
#: Which recursion the last :func:`forward_backward` call used (for tests and benchmarks).
LAST_PATH: dict = {"path": None}


def _close(a, b):
    return jnp.all(jnp.abs(a - b) <= _RTOL * jnp.maximum(jnp.abs(a), jnp.abs(b)) + _ATOL, axis=-1)


@partial(jit, static_argnames=("conv_f", "conv_b", "n_blocks", "smooth"))
def _blocked_pass(conv_f, conv_b, inv_z, init, lik_f, st_f, g_f, lik_b, en_b, g_b, *, n_blocks, smooth):
    """One pass of the blocked recursions: the forward pass over the ``P`` blocks of one chunk and
    (when smoothing) the backward pass over the blocks of another, all blocks at once.

    ``lik_f`` / ``lik_b`` ``(P B, G)``: scaled likelihood rows; ``st_f`` / ``en_b``: first /
    last bin of each segment. ``g_f[p]``: the forward message at the bin before block ``p``
    (``g_f[0]`` exact: the previous chunk's last message); ``g_b[p]``: the backward message
    ``l beta`` at the bin after block ``p`` (``g_b[-1]`` exact). Returns the filtered messages,
    normalisers, backward messages ``beta``, whether every block started from the message its
    neighbour ends with (then all outputs are exact), and the messages to start the next pass from.
    """
    P = n_blocks
    n, G = lik_f.shape
    B = n // P
    lf = jnp.swapaxes(lik_f.reshape(P, B, G), 0, 1)  # (B, P, G), time first
    sf = st_f.reshape(P, B).T
    nonneg = conv_f.nonnegative

    def fstep(f_prev, inp):
        l, st = inp
        pred = conv_f(f_prev * inv_z).reshape(P, G)
        if not nonneg:
            pred = jnp.maximum(pred, 0.0)
        u = l * jnp.where(st[:, None], init[None, :], pred)
        c = jnp.sum(u, axis=1)
        f = u * (1.0 / c)[:, None]
        return f, (f, c)

    def bstep(msg, inp):
        l, e = inp
        beta = conv_b(msg).reshape(P, G) * inv_z
        if not nonneg:
            beta = jnp.maximum(beta, 0.0)
        beta = jnp.where(e[:, None], 1.0, beta * (1.0 / jnp.max(beta, axis=1, keepdims=True)))
        return l * beta, beta

    out = {}
    if smooth:
        lb4 = jnp.swapaxes(lik_b.reshape(P, B, G), 0, 1)  # (B, P, G)
        eb = en_b.reshape(P, B).T

        def step(carry, inp):
            f, msg = carry
            f, fo = fstep(f, inp[:2])
            msg, beta = bstep(msg, inp[2:])
            return (f, msg), (fo, beta)

        (f_last, _), ((F, C), Bt) = jax.lax.scan(step, (g_f, g_b), (lf, sf, lb4[::-1], eb[::-1]))
        beta = Bt[::-1]  # (B, P, G), time first
        first = lb4[0] * beta[0]  # the message l beta at each block's first bin
        first = first / jnp.max(first, axis=1, keepdims=True)
        ok_b = _close(g_b[:-1], first[1:]) | eb[-1, :-1]  # a segment ending a block makes it moot
        out["beta"] = jnp.swapaxes(beta, 0, 1).reshape(n, G)
        out["g_b"] = jnp.concatenate([first[1:], g_b[-1:]])
        out["msg_first"] = first[0]
    else:
        f_last, (F, C) = jax.lax.scan(fstep, g_f, (lf, sf))
        ok_b = jnp.ones((), bool)
    ok_f = _close(g_f[1:], f_last[:-1]) | sf[0, 1:]
    out["filt"] = jnp.swapaxes(F, 0, 1).reshape(n, G)
    out["c"] = C.T.reshape(n)
    out["g_f"] = jnp.concatenate([g_f[:1], f_last[:-1]])
    out["f_last"] = f_last[-1]
    out["ok"] = jnp.all(ok_f) & jnp.all(ok_b)
    return out


def _chunk_evidence(c, n: int, row_max) -> float | None:
    """``sum log c + row maxima`` over the chunk's ``n`` real bins; None if a normaliser is not positive."""
    c = np.asarray(c)[:n]
    if not np.all(np.isfinite(c) & (c > 0)):
        return None
    return float(np.sum(np.log(c) + row_max))


def _combine_done(out, bounds, filt, beta, lik, chunks) -> bool:
    """Write the smoothed log posterior of every chunk in `chunks` whose forward and backward
    messages are both there into ``out`` (the product is formed in place there: no temporary
    ``(time, G)`` array), and release its arrays. False if a bin's product is zero everywhere."""
    for k in chunks:
        if filt[k] is None or beta[k] is None:
            continue
        ak, bk = bounds[k]
        g = out[ak:bk]
        np.multiply(np.asarray(filt[k])[: bk - ak], np.asarray(beta[k])[: bk - ak], out=g)
        tot = np.sum(g, axis=1, keepdims=True)
        if not np.all(np.isfinite(tot) & (tot > 0)):
            return False
        with np.errstate(divide="ignore"):
            np.log(g, out=g)
        g -= np.log(tot)
        filt[k] = beta[k] = lik[k] = None
    return True


@partial(jit, static_argnames=("conv",))
def _forward_pass(conv, inv_z, init, lik, start, f0):
    """The forward recursion over one chunk of scaled likelihood rows ``lik`` ``(L, G)``.

    ``f0``: the filtered message at the bin before the chunk; ``start`` marks the first bin of
    each segment (it restarts from ``init``). Returns the filtered messages, their normalisers
    and the last message.
    """
    f_last, (filt, c) = jax.lax.scan(_filter_step(conv, inv_z, init), f0, (lik, start))
    return filt, c, f_last


@partial(jit, static_argnames=("conv",))
def _backward_pass(conv, inv_z, lik, end, msg0):
    """The backward recursion over one chunk, from its last bin to its first.

    ``msg0``: the message ``l beta`` at the bin after the chunk; ``end`` marks the last bin of
    each segment (its ``beta`` is 1). Returns the messages ``beta`` (each scaled to a maximum of
    1) and the normalised message ``l beta`` at the chunk's first bin.
    """
    first, beta = jax.lax.scan(_smooth_step(conv, inv_z), msg0, (lik, end), reverse=True)
    return beta, first / jnp.max(first)


@cache
def _pool() -> ThreadPoolExecutor:
    """Two threads for the forward and backward recursions (XLA runs each loop on one core)."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="bayesneuro-forward-backward")


MAX_PASSES = 4  # passes of the blocked recursion before falling back to the sequential one


def _blocked(rows, n_time, G, dtype, conv_f, conv_b, inv_z, init_j, mask_np, start, end, smooth, block,
             chunk_size):
    """The blocked forward-backward; None when the blocks do not agree within MAX_PASSES passes."""
    if block is None:  # one block per chunk: the exact recursion in a single pass
        B, P = _chunk_length(n_time, chunk_size), 1
    else:
        B = max(int(block), 1)
        p_max = max(chunk_size // B, 1)
        P = min(p_max, 1 << int(np.ceil(np.log2(-(-n_time // B)))))  # a power of two: few compiled shapes
    L = P * B
    bounds = [(a, min(a + L, n_time)) for a in range(0, n_time, L)]
    n = len(bounds)
    mask_row = mask_np.astype(dtype)

    def chunk(a, b):
        x = np.asarray(rows(a, b), dtype=dtype)
        if x.shape != (b - a, G):
            return None
        x, row_max = _scale_rows(x if x.flags.writeable else x.copy(), mask_np)
        if b - a < L:  # padding: every bin a segment of its own, so it never affects a real one
            x = np.concatenate([x, np.broadcast_to(mask_row, (L - (b - a), G))])
        return jnp.asarray(x), row_max

    def flags(a, b, f):
        out = np.ones(L, bool)
        out[: b - a] = f[a:b]
        return jnp.asarray(out)

    lik, row_max = [None] * n, [None] * n
    for k, (a, b) in enumerate(bounds):
        r = chunk(a, b)
        if r is None or not np.all(np.isfinite(r[1])):
            return None  # the sequential recursion names the bad bins
        lik[k], row_max[k] = r
    out = np.empty((n_time, G), dtype=dtype)
    log_ev = 0.0
    if P == 1:
        return _single_block(lik, row_max, bounds, flags, out, conv_f, conv_b, inv_z, init_j, start, end, smooth)
    carry = jnp.broadcast_to(init_j, (P, G))
    msg = jnp.ones((P, G), dtype)
    filt, beta = [None] * n, [None] * n
    for i in range(n):
        j = n - 1 - i
        a, b = bounds[i]
        aj, bj = bounds[j]
        st, en = flags(a, b, start), flags(aj, bj, end)
        for _ in range(MAX_PASSES):
            r = _blocked_pass(conv_f, conv_b, inv_z, init_j, lik[i], st, carry, lik[j] if smooth else None, en,
                              msg if smooth else None, n_blocks=P, smooth=bool(smooth))
            if bool(r["ok"]):
                break
            carry = r["g_f"]
            if smooth:
                msg = r["g_b"]
        else:
            return None
        ev = _chunk_evidence(r["c"], b - a, row_max[i])
        if ev is None:
            return None
        log_ev += ev
        carry = jnp.broadcast_to(r["f_last"], (P, G))  # guesses for the next chunk: its neighbour's end
        if smooth:
            msg = jnp.broadcast_to(r["msg_first"], (P, G))
            filt[i], beta[j] = r["filt"], r["beta"]
        else:
            with np.errstate(divide="ignore"):
                np.log(np.asarray(r["filt"])[: b - a], out=out[a:b])
            continue
        if not _combine_done(out, bounds, filt, beta, lik, sorted({i, j})):
            return None
    return out, log_ev


def _single_block(lik, row_max, bounds, flags, out, conv_f, conv_b, inv_z, init_j, start, end, smooth):
    """The exact recursions, one chunk per call, the forward and the backward pass on two threads.

    Step ``i`` runs the forward pass over chunk ``i`` and the backward pass over chunk
    ``n - 1 - i`` at the same time: they are independent given the likelihood, and one XLA loop
    runs on one core. A chunk's smoothed posterior is written as soon as both its passes are done.
    """
    n = len(bounds)
    log_ev = 0.0
    carry = init_j
    msg = jnp.ones(out.shape[1], out.dtype)
    filt, beta = [None] * n, [None] * n
    pool = _pool()
    for i in range(n):
        j = n - 1 - i
        a, b = bounds[i]
        aj, bj = bounds[j]
        fwd = pool.submit(_forward_pass, conv_f, inv_z, init_j, lik[i], flags(a, b, start), carry)
        if smooth:
            bwd = pool.submit(_backward_pass, conv_b, inv_z, lik[j], flags(aj, bj, end), msg)
        f, c, carry = jax.block_until_ready(fwd.result())
        ev = _chunk_evidence(c, b - a, row_max[i])
        if ev is None:
            return None
        log_ev += ev
        if not smooth:
            with np.errstate(divide="ignore"):
                np.log(np.asarray(f)[: b - a], out=out[a:b])
            continue
        filt[i] = f
        beta[j], msg = jax.block_until_ready(bwd.result())
        if not _combine_done(out, bounds, filt, beta, lik, sorted({i, j})):
            return None
    return out, log_ev


def _scale_rows(x: np.ndarray, mask_np: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Likelihood rows zero off the visited cells, divided by their maxima (in place); and the log maxima."""
    x[:, ~mask_np] = -np.inf
    m = np.max(x, axis=1)
    with np.errstate(invalid="ignore"):
        x -= m[:, None]
        np.exp(x, out=x)
    return x, m


def _chunk_length(n_time: int, chunk_size: int) -> int:
    """Compiled chunk length: `chunk_size`, or the next power of two for shorter data."""
    return chunk_size if n_time >= chunk_size else int(2 ** np.ceil(np.log2(max(n_time, 1))))


def forward_backward(
    log_lik: Any,
    grid: Grid,
    visited: np.ndarray,
    *,
    sigma: Any = None,
    transition: np.ndarray | None = None,
    log_init: np.ndarray | None = None,
    segment_ids: np.ndarray | None = None,
    smooth: bool = True,
    n_time: int | None = None,
    chunk_size: int = _SCAN_CHUNK,
    block: int | str | None = "auto",
) -> tuple[np.ndarray, float]:
    """Filtered or smoothed log posteriors on a grid under a Markov prior.

    Parameters
    ----------
    log_lik : ndarray, shape (time, G), or callable
        Log likelihood of each bin's counts in each cell (``-inf`` allowed), or a function
        ``(a, b) -> (b - a, G)`` array computing rows ``a:b`` on demand (then give `n_time`),
        so that the ``(time, G)`` likelihood is never stored.
    grid : Grid
    visited : ndarray of bool, shape (G,)
        Cells the chain may occupy.
    sigma : float or sequence, optional
        Random-walk step sd per dimension (units of the variable): the convolution path.
    transition : ndarray, shape (G, G), optional
        A dense row-stochastic transition matrix instead (``O(G^2)`` per bin).
    log_init : ndarray, shape (G,), optional
        Log prior at the start of each segment; default uniform on visited cells.
    segment_ids : ndarray, shape (time,), optional
        Each segment restarts from `log_init`.
    smooth : bool, default True
        Forward-backward (smoothed) or forward only (filtered).
    n_time : int, optional
        Number of bins, when `log_lik` is a function.
    chunk_size : int
        Bins per compiled call.
    block : int, None or "auto", default "auto"
        Bins per block of the blocked recursion (see Notes); None: one block per chunk (the
        plain sequential recursion, one pass, the forward and the backward recursion run at the
        same time on two threads). ``"auto"``: None on a CPU (where a step's cost is its
        arithmetic, and the blocked recursion's second pass would double it), 256 on an
        accelerator (where it is the step's fixed latency).

    Returns
    -------
    log_post : ndarray, shape (time, G)
        Normalised log posteriors.
    log_evidence : float
        ``log p(counts)`` summed over segments (up to the constants in `log_lik`).

    Notes
    -----
    The recursions run on the blocks of `block` bins of a chunk at once, both passes in one
    loop, so each sequential step works on a batch of messages instead of one (on grids of
    100-1,600 cells a step's fixed cost, not its arithmetic, dominates). The first pass starts
    every block from a guess; each further pass starts block ``p`` from the message block
    ``p - 1`` ended with in the pass before (forward; ``p + 1`` backward). Filtering forgets its
    start, so the messages settle within a few passes; when every block started from the
    message its neighbour ends with (relative difference at most 1e-12, absolute 1e-15, of the
    normalised messages) the result is the exact sequential recursion. Chunks pass exact
    messages to each other. Where the blocks have not agreed after four passes (data too weak
    to forget a block's start within a block) the decode is redone by the sequential
    recursion, so the result is always the exact forward-backward posterior. The likelihood is
    scaled (``exp``) and the smoothed posterior's ``log`` taken in numpy on the host, whose
    vectorised float64 ``exp``/``log`` are several times faster than XLA's on a CPU. A bin
    where the prior and the likelihood rule each other out is reported by the checked
    sequential recursion (``ValueError`` with the cause).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders import Grid
    >>> from bayesneuro.decoders.state_space import forward_backward
    >>> grid = Grid.regular(bins=5, range=(0, 5))
    >>> ll = np.log(np.array([[0.9, 0.1, 0.1, 0.1, 0.1]] * 3))
    >>> lp, _ = forward_backward(ll, grid, np.ones(5, bool), sigma=1.0)
    >>> int(np.argmax(lp[1]))
    0
    """
    if callable(log_lik):
        if n_time is None:
            raise ValueError("give n_time when log_lik is a function")
        rows = log_lik
    else:
        arr = np.asarray(log_lik)
        if arr.ndim != 2:
            raise ValueError(f"log_lik must be (time, G), got shape {arr.shape}")
        n_time = arr.shape[0]
        rows = lambda a, b: np.array(arr[a:b])  # a copy: the blocked recursion scales rows in place
    G = grid.n_cells
    dtype = jnp.zeros(()).dtype
    mask_np = np.asarray(visited, dtype=bool).reshape(-1)
    if mask_np.size != G:
        raise ValueError(f"visited has {mask_np.size} cells, the grid {G}")
    seg = np.zeros(n_time, dtype=np.int64) if segment_ids is None else np.asarray(segment_ids)
    if seg.shape != (n_time,):
        raise ValueError(f"segment_ids must have {n_time} entries, got {seg.shape}")
    start = np.r_[True, seg[1:] != seg[:-1]]
    end = np.r_[seg[1:] != seg[:-1], True]
    if log_init is None:
        init = mask_np / mask_np.sum()
    else:
        li = np.asarray(log_init, dtype=np.float64)
        init = np.exp(li - np.max(li)) * mask_np
        init = init / init.sum()
    if transition is not None:
        A = np.asarray(transition, dtype=np.float64)
        if A.shape != (G, G):
            raise ValueError(f"transition must be ({G}, {G}), got {A.shape}")
        Aj = jnp.asarray(A, dtype)
        conv_f, conv_b = _DenseConv(Aj, False), _DenseConv(Aj, True)
        inv_z = jnp.ones(G, dtype)
    else:
        if sigma is None:
            raise ValueError("give the random-walk sigma or a dense transition matrix")
        conv_f = conv_b = _SeparableConv(grid, sigma, dtype)
        Z = np.asarray(conv_f(jnp.asarray(mask_np, dtype))).reshape(-1)
        inv_z = jnp.asarray(np.where(mask_np & (Z > 0), 1.0 / np.where(Z > 0, Z, 1.0), 0.0), dtype)
    mask = jnp.asarray(mask_np, dtype)
    init_j = jnp.asarray(init, dtype)
    if isinstance(block, str):
        if block != "auto":
            raise ValueError(f"block must be 'auto', None or a number of bins, got {block!r}")
        block = None if jax.default_backend() == "cpu" else BLOCK
    if n_time > 0:
        res = _blocked(rows, n_time, G, dtype, conv_f, conv_b, inv_z, init_j, mask_np, start, end, smooth,
                       None if block is None else int(block), int(chunk_size))
        LAST_PATH["path"] = ("single block" if block is None else "blocked") if res is not None else "checked"
        if res is not None:
            return res
    LAST_PATH["path"] = "checked"
    return _sequential(rows, n_time, G, dtype, conv_f, conv_b, mask, inv_z, init_j, mask_np, start, end,
                       smooth, chunk_size)


def _sequential(rows, n_time, G, dtype, conv_f, conv_b, mask, inv_z, init_j, mask_np, start, end, smooth,
                chunk_size):
    """The exact sequential recursion, chunk by chunk (the reference and the fallback)."""
    L = _chunk_length(n_time, chunk_size)
    bounds = [(a, min(a + L, n_time)) for a in range(0, n_time, L)]

    def padded(a, b, x, fill):
        if b - a == L:
            return x
        pad = [(0, L - (b - a))] + [(0, 0)] * (np.ndim(x) - 1)
        return jnp.pad(jnp.asarray(x), pad, constant_values=fill)

    def ll_chunk(a, b):
        x = rows(a, b)
        if tuple(x.shape) != (b - a, G):
            raise ValueError(f"log-likelihood rows {a}:{b} have shape {tuple(x.shape)}, expected {(b - a, G)}")
        return padded(a, b, jnp.asarray(x, dtype), 0.0)

    out = np.empty((n_time, G), dtype=dtype)
    log_ev = 0.0

    def check(n_bad, n_zero, a, b, llc):
        if int(n_bad):
            bad = np.flatnonzero(~np.isfinite(np.max(np.where(mask_np, np.asarray(llc)[: b - a], -np.inf), axis=1)))
            raise ValueError(
                f"{int(n_bad)} bins have a likelihood of zero (or NaN) in every visited cell, e.g. bin"
                f" {a + int(bad[0])}; check the rates and the counts"
            )
        if int(n_zero):
            raise ValueError(_NO_OVERLAP.format(n=int(n_zero), what="forward message", where=f"bins {a}:{b}"))

    def check_smoothed(a, b):
        bad = np.flatnonzero(~np.all(np.isfinite(out[a:b]) | (out[a:b] == -np.inf), axis=1)
                             | ~np.any(np.isfinite(out[a:b]), axis=1))
        if bad.size:
            raise ValueError(_NO_OVERLAP.format(n=bad.size, what="product of the forward and backward messages",
                                                where=f"e.g. bin {a + int(bad[0])}"))

    if not smooth:
        carry = init_j
        for a, b in bounds:
            llc = ll_chunk(a, b)
            real = np.arange(L) < (b - a)
            carry, f, ev, n_bad, n_zero = _forward_chunk(
                conv_f, mask, inv_z, init_j, llc, jnp.asarray(padded(a, b, start[a:b], True)), jnp.asarray(real), carry,
            )
            check(n_bad, n_zero, a, b, llc)
            log_ev += float(ev)
            out[a:b] = np.asarray(_log(f))[: b - a]
        return out, log_ev
    # Smoothing: the likelihood chunks are computed once and kept (as JAX arrays); then step i
    # runs the forward pass over chunk i and the backward pass over chunk n-1-i together. A
    # chunk's smoothed posterior is written as soon as both its passes are done.
    n = len(bounds)
    lik = [ll_chunk(a, b) for a, b in bounds]
    filt, beta = [None] * n, [None] * n
    carry, msg = init_j, jnp.zeros(G, dtype)
    for i in range(n):
        a, b = bounds[i]
        j = n - 1 - i
        aj, bj = bounds[j]
        real = np.arange(L) < (b - a)
        carry, f, ev, n_bad, n_zero, msg, bt = _pair_chunk(
            conv_f, conv_b, mask, inv_z, init_j, lik[i], jnp.asarray(padded(a, b, start[a:b], True)),
            jnp.asarray(real), carry, lik[j], jnp.asarray(padded(aj, bj, end[aj:bj], True)), msg,
        )
        check(n_bad, n_zero, a, b, lik[i])
        log_ev += float(ev)
        filt[i], beta[j] = f, bt
        for k in {i, j}:
            if filt[k] is not None and beta[k] is not None:
                ak, bk = bounds[k]
                out[ak:bk] = np.asarray(_smoothed(filt[k], beta[k]))[: bk - ak]
                check_smoothed(ak, bk)
                filt[k] = beta[k] = lik[k] = None  # release as we go
    return out, log_ev


_NO_OVERLAP = (
    "{n} bins have a {what} of zero (or NaN) in every cell ({where}): the Markov prior and the likelihood"
    " rule each other out there (a transition too narrow for how fast the spikes say the variable moves,"
    " or a likelihood too sharp). Widen the random walk (sigma_walk, or sigma_walk='evidence'), temper"
    " the likelihood (temperature > 1 or 'auto'), or check that the counts and the variable are aligned"
)


def temper_posterior(log_post: np.ndarray, temperature: float) -> np.ndarray:
    r"""Tempered log posteriors ``log p_t^{1/T}`` renormalised over the cells of each bin (row).

    Cells of zero probability stay at zero and the most probable cell of each bin is kept.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders.state_space import temper_posterior
    >>> np.exp(temper_posterior(np.array([[np.log(0.8), np.log(0.2), -np.inf]]), 2.0)).round(3)
    array([[0.667, 0.333, 0.   ]])
    """
    lp = np.asarray(log_post, dtype=np.float64)
    if temperature == 1.0:
        return lp
    with np.errstate(invalid="ignore"):
        t = lp / float(temperature)
        return t - special.logsumexp(t, axis=1, keepdims=True)


def _increments(values: np.ndarray, seg: np.ndarray, grid: Grid) -> np.ndarray:
    """One-bin displacements within segments, wrapped on circular axes, ``(n, dim)``."""
    same = seg[1:] == seg[:-1]
    d = np.diff(values, axis=0)[same]
    for k, c in enumerate(grid.circular):
        if c:
            per = grid.periods[k]
            d[:, k] = np.mod(d[:, k] + per / 2, per) - per / 2
    return d


class StateSpaceDecoder(NaiveBayesDecoder):
    """Naive-Bayes likelihood with a Markov prior over time, filtered or smoothed on the grid.

    Parameters
    ----------
    transition : {"random_walk", "empirical"}, default "random_walk"
        ``"random_walk"``: a Gaussian step kernel, decoded by FFT in ``O(T G log G)``.
        ``"empirical"``: the training variable's cell-to-cell transition counts plus
        ``pseudo_count`` times the random walk, row-normalised (``O(T G^2)``).
    sigma_walk : float, sequence, "evidence" or None, default None
        Random-walk step sd per bin, in units of the variable. None: learned from the training
        variable (root-mean-square one-bin displacement within trials). ``"evidence"``: that
        value times 0.5, 1, 2, 4 or 8, whichever gives the training spikes the highest marginal
        likelihood (empirical Bayes; ``evidence_trace_`` holds the values).
    smooth : bool, default True
        Forward-backward smoothing (uses spikes after each bin); False gives the causal filter.
    pseudo_count : float, default 1.0
        Weight of the random walk in the empirical transition.
    bins, range, circular, grid, tuning, sigma, n_basis, smoothness, prior, min_occupancy, point, chunk_size
        As :class:`NaiveBayesDecoder` (``prior`` is the prior at the start of each trial).
    observation, temperature
        As :class:`NaiveBayesDecoder`: negative-binomial neurons and a temperature calibrated on
        inner folds of the training data by default (the smallest temperature whose inner 90%
        coverage reaches 0.9). With ``"auto"`` each inner fold decodes with the random walk
        learned on the training data (``sigma_walk_``), so the temperature is chosen for that
        transition.
    tempering : {"posterior", "likelihood"}, default "posterior"
        What the temperature ``T`` divides. ``"posterior"``: the smoothed (or filtered) log
        posterior of the untempered model, ``p_t(s)^{1/T}`` renormalised per bin; it keeps each
        bin's most probable cell and widens both the likelihood's and the random walk's share of
        the confidence. ``"likelihood"``: the log likelihood inside forward-backward (the prior
        untouched), which cannot widen a too-confident random walk. The calibration costs one
        forward-backward per inner fold with ``"posterior"``, one per fold and temperature with
        ``"likelihood"``.

    Notes
    -----
    ``fit`` is :meth:`NaiveBayesDecoder.fit` (method ``"plugin"``, no random numbers) followed
    by learning the random walk (with the untempered likelihood for ``sigma_walk="evidence"``)
    and then, with ``temperature="auto"``, the temperature.

    The random walk's transition integrates the Gaussian step density over each destination
    cell, averaged over a uniform position in the starting cell, so a walk whose step is far
    below a cell still moves to its neighbours (sampled at cell centres, a step under a quarter
    of a cell had one tap, and forward and backward messages could settle on different cells:
    NaN posteriors). A bin where the prior and the likelihood rule each other out raises a
    ``ValueError`` with the cause instead of returning NaN.

    **Calibration on real data** (3 contiguous outer folds, 90% regions, defaults otherwise):
    tempering the likelihood covers 0.82 on the 2-D place cells (T 25-40), 0.64 on the linear
    track and 0.75 on the head-direction cells (T = 40, the edge, with a warning): the Gaussian
    random walk with the training RMS step is itself too sure where the animal goes next (runs,
    fast head turns), and a flat likelihood only hands the posterior to it. Tempering the
    smoothed posterior (the default) covers 0.89, 0.95 and 0.89 with T of 4-6, 10-20 and
    7-10, and lowers the median error (the MAP cell is the untempered one, not that of a
    likelihood flattened 25-40 times). Widening the walk instead (``sigma_walk="evidence"``,
    likelihood tempering) is the model-based alternative; it gives 0.89 on the place cells and
    0.85 on the track, but 0.75 on the head-direction cells, where the evidence keeps the learned
    step, so it is not the default.

    Attributes
    ----------
    sigma_walk_ : ndarray
        The random-walk step sd used.
    transition_ : ndarray or None
        The dense transition (``"empirical"`` only).
    log_evidence_ : float
        Log marginal likelihood of the last decoded data (of the tempered likelihood when
        ``tempering="likelihood"`` and ``temperature_ > 1``; untempered with ``"posterior"``).
    dispersion_, temperature_, calibration_
        As :class:`NaiveBayesDecoder`.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro import SpikeData
    >>> from bayesneuro.decoders import NaiveBayesDecoder, StateSpaceDecoder
    >>> rng = np.random.default_rng(2)
    >>> x = np.abs(np.mod(np.cumsum(rng.normal(0, 0.02, 6000)), 2) - 1)  # reflecting walk in [0, 1]
    >>> centres = np.linspace(0, 1, 10)
    >>> counts = rng.poisson(0.02 + 0.3 * np.exp(-((x[:, None] - centres) ** 2) / 0.01))
    >>> data = SpikeData.from_counts(counts, bin_size=0.02, covariates=x, feature_names=["x"])
    >>> train, test, _ = data.split(fractions=(0.7, 0.3))
    >>> ss = StateSpaceDecoder(bins=25, range=(0, 1)).fit(train, "x")
    >>> nb = NaiveBayesDecoder(bins=25, range=(0, 1)).fit(train, "x")
    >>> ss.evaluate(test, "x")["median_error"] < nb.evaluate(test, "x")["median_error"]
    True
    >>> ss.score(test, "x") > nb.score(test, "x")  # nats/bin
    True
    """

    def __init__(
        self,
        transition: str = "random_walk",
        sigma_walk: Any = None,
        smooth: bool = True,
        pseudo_count: float = 1.0,
        bins: Any = 40,
        range: Any = None,
        circular: Any = False,
        grid: Grid | None = None,
        tuning: str = "histogram",
        sigma: Any = None,
        n_basis: Any = None,
        smoothness: Any = "auto",
        prior: Any = "uniform",
        min_occupancy: float | None = None,
        point: str = "map",
        chunk_size: int = _CHUNK,
        observation: str = "negative_binomial",
        temperature: Any = "auto",
        tempering: str = "posterior",
    ):
        if transition not in ("random_walk", "empirical"):
            raise ValueError(f"transition must be 'random_walk' or 'empirical', got {transition!r}")
        if tempering not in TEMPERINGS:
            raise ValueError(f"tempering must be 'posterior' or 'likelihood', got {tempering!r}")
        super().__init__(
            bins=bins, range=range, circular=circular, grid=grid, tuning=tuning, sigma=sigma, n_basis=n_basis,
            smoothness=smoothness, prior=prior, min_occupancy=min_occupancy, point=point, chunk_size=chunk_size,
            observation=observation, temperature=temperature,
        )
        self.transition = transition
        self.sigma_walk = sigma_walk
        self.smooth = smooth
        self.pseudo_count = pseudo_count
        self.tempering = tempering

    def _fit_extra(self, data, values) -> None:
        grid = self.grid_
        seg = data.segment_ids
        d = _increments(values, seg, grid)
        if self.sigma_walk is None or (isinstance(self.sigma_walk, str) and self.sigma_walk == "evidence"):
            if d.shape[0] < 2:
                raise ValueError("the training data are too short to learn the random walk; give sigma_walk")
            sig = np.sqrt(np.mean(d**2, axis=0))
            if self.sigma_walk == "evidence":
                sig = self._sigma_by_evidence(data, sig)
        elif isinstance(self.sigma_walk, str):
            raise ValueError(f"sigma_walk must be None, 'evidence' or a positive number, got {self.sigma_walk!r}")
        else:
            sig = np.broadcast_to(np.asarray(self.sigma_walk, dtype=np.float64), (grid.n_dim,)).copy()
        self.sigma_walk_ = sig
        self.transition_ = None
        if self.transition == "empirical":
            cells = grid.locate(values)
            same = seg[1:] == seg[:-1]
            C = np.zeros((grid.n_cells, grid.n_cells))
            np.add.at(C, (cells[:-1][same], cells[1:][same]), 1.0)
            vis = self.tuning_.visited
            C = C * vis[None, :] + float(self.pseudo_count) * dense_transition(grid, sig, vis)
            Z = C.sum(axis=1, keepdims=True)
            self.transition_ = np.where(Z > 0, C / np.where(Z > 0, Z, 1.0), 0.0)

    def _sigma_by_evidence(self, data, sig0: np.ndarray) -> np.ndarray:
        """The multiple of `sig0` with the highest filtering evidence on the training data."""
        rows = likelihood_rows(data.counts, self.tuning_.rates, data.bin_size, self.tuning_.visited,
                               self.dispersion_)
        best, best_ev = sig0, -np.inf
        self.evidence_trace_ = {}
        for m in EVIDENCE_MULTIPLES:
            _, ev = forward_backward(
                rows, self.grid_, self.tuning_.visited, sigma=sig0 * m, log_init=self.log_prior_,
                segment_ids=data.segment_ids, smooth=False, n_time=data.n_time, chunk_size=int(self.chunk_size),
            )
            self.evidence_trace_[float(m)] = ev
            if ev > best_ev:
                best, best_ev = sig0 * m, ev
        return best

    def _set_tuning(self, tc, bin_size) -> None:
        super()._set_tuning(tc, bin_size)
        given = self.sigma_walk is not None and not isinstance(self.sigma_walk, str)
        self.sigma_walk_ = (
            np.broadcast_to(np.asarray(self.sigma_walk, dtype=np.float64), (tc.grid.n_dim,)).copy() if given else None
        )
        self.transition_ = None

    @pynapple_io()
    def decode(self, data: Any) -> GridPosterior:
        """Smoothed (or filtered) posterior over the grid for every bin of `data`.

        Each trial or block of `data` starts from the prior; the transition never crosses them.
        """
        data = self._prepare(data)
        if np.isfinite(self.bin_size_) and not np.isclose(data.bin_size, self.bin_size_, rtol=1e-9, atol=0):
            raise ValueError(
                f"the data have {data.bin_size} s bins but the transition was learned for {self.bin_size_} s"
                " bins; rebin the data or refit"
            )
        if self.transition == "random_walk" and self.sigma_walk_ is None:
            raise ValueError("this decoder was built from tuning curves: give sigma_walk")
        lp = self._log_posterior(data, self.temperature_)
        post = GridPosterior(lp, self.grid_, data.bin_centers, point_estimate=self.point)
        return attach_index(post, np.arange(data.n_time))

    def _log_posterior(self, data: Any, temperature: float) -> np.ndarray:
        """Smoothed (or filtered) log posterior of prepared `data` with the likelihood tempered by `temperature`.

        Sets ``log_evidence_``.
        """
        posterior = self.tempering == "posterior"
        lp = self._untempered_or_likelihood_tempered(data, 1.0 if posterior else temperature)
        return temper_posterior(lp, temperature) if posterior else lp

    @pynapple_io()
    def cell_log_likelihood(self, data: Any) -> np.ndarray:
        """Unnormalised log likelihood plus log prior in every cell, ``(time, G)`` (``-inf`` off the visited cells).

        Divided by ``temperature_`` with ``tempering="likelihood"``; untempered with
        ``tempering="posterior"``, where the temperature acts on the smoothed posterior instead.
        """
        data = self._prepare(data)
        temperature = 1.0 if self.tempering == "posterior" else self.temperature_
        return log_posterior(data.counts, self.tuning_.rates, data.bin_size, self.log_prior_,
                             normalize=False, chunk_size=int(self.chunk_size), dispersion=self.dispersion_,
                             temperature=temperature)

    def _untempered_or_likelihood_tempered(self, data: Any, temperature: float) -> np.ndarray:
        """Forward-backward of the likelihood divided by `temperature` (1: untempered); sets ``log_evidence_``."""
        rows = likelihood_rows(data.counts, self.tuning_.rates, data.bin_size, self.tuning_.visited,
                               self.dispersion_, temperature)
        lp, log_ev = forward_backward(
            rows, self.grid_, self.tuning_.visited, sigma=self.sigma_walk_, transition=self.transition_,
            log_init=self.log_prior_, segment_ids=data.segment_ids, smooth=bool(self.smooth),
            n_time=data.n_time, chunk_size=int(self.chunk_size),
        )
        self.log_evidence_ = log_ev + count_terms_total(data.counts, self.dispersion_) / temperature
        return lp

    def _tempered_log_posteriors(self, data: Any, temperatures: Any):
        """``(temperature, log posterior (time, G))`` for each temperature: one forward-backward each."""
        data = self._prepare(data)
        if self.tempering == "posterior":  # one forward-backward, then one power per temperature
            lp = self._untempered_or_likelihood_tempered(data, 1.0)
            for T in temperatures:
                yield float(T), temper_posterior(lp, float(T))
            return
        for T in temperatures:
            yield float(T), self._log_posterior(data, float(T))

    def _posterior_variables(self):
        variables, coords = super()._posterior_variables()
        if self.sigma_walk_ is not None:
            variables["sigma_walk"] = (("state",), np.asarray(self.sigma_walk_, dtype=np.float64))
            coords["state"] = list(self.grid_.names)
        return variables, coords
