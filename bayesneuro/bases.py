"""Temporal bases for GLM stimulus, spike-history and coupling filters.

A filter over ``L`` lags is written as ``h = B @ w``: ``B`` is a ``(lag, basis)`` matrix
of a few smooth functions and ``w`` holds ``n_basis`` weights. Convolving a signal with
each column of ``B`` once (:func:`convolve`, :func:`design_matrix`) turns the filter
into ordinary regression features, so a GLM only ever learns ``w``.

Bases
-----
:class:`RaisedCosineLog`
    Log-time raised cosines of Pillow et al. (2008): fine at short lags, coarse at long.
:class:`RaisedCosineLinear`
    Evenly spaced raised cosines.
:class:`BSpline`
    Clamped B-splines on uniform knots.
:class:`Identity`
    One function per lag (an unconstrained filter).

Every basis is a small frozen dataclass with ``n_basis``, ``window`` (the number of lags),
:meth:`~Basis.matrix`, :meth:`~Basis.reconstruct` and :meth:`~Basis.lags`. Bases are
hashable and registered as static pytrees, so they pass through :func:`jax.jit`.

Row ``k`` of a basis matrix is lag ``k + s`` bins, where ``s = 0`` for a stimulus filter
(the current frame is lag 0) and ``s = 1`` for spike history and coupling (the current bin
is excluded): ``history=True`` in :func:`convolve`.
"""

from __future__ import annotations

import abc
import math
import operator
from dataclasses import KW_ONLY, dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy import interpolate as _interpolate

from bayesneuro import _xla_cpu  # noqa: F401  (batched LAPACK on CPU as loops: no thread-pool deadlock)
from bayesneuro._jit import jit

__all__ = [
    "Basis",
    "RaisedCosineLog",
    "RaisedCosineLinear",
    "BSpline",
    "Identity",
    "orthogonalize",
    "convolve",
    "design_matrix",
]


# ----------------------------------------------------------------------------- validation


def _as_int(name: str, value, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _as_float(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _as_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        hint = " (mark it static under jax.jit)" if isinstance(value, jax.core.Tracer) else ""
        raise ValueError(f"{name} must be True or False, got {value!r}{hint}")
    return bool(value)


def _resolve_history(basis, history) -> bool:
    """``history`` as a bool; ``None`` means the basis's own flag (``False`` if it has none)."""
    own = getattr(basis, "history", None)
    if history is None:
        return bool(own) if own is not None else False
    history = _as_bool("history", history)
    if own is not None and bool(own) != history:
        raise ValueError(
            f"history={history} disagrees with the basis, which was built with "
            f"history={bool(own)}: {basis!r}. Use history=True for spike-history and "
            "coupling features (current bin excluded) and history=False for stimulus "
            "filters (current frame included), and build the basis with the same flag."
        )
    return history


def _raised_cosine(distance: np.ndarray, half_width: float) -> np.ndarray:
    """``(cos(clip(pi * d / half_width, -pi, pi)) + 1) / 2``: 1 at d = 0, 0 for |d| >= half_width."""
    return 0.5 * (np.cos(np.clip(distance * (np.pi / half_width), -np.pi, np.pi)) + 1.0)


# ----------------------------------------------------------------------------- bases


class Basis(abc.ABC):
    """Abstract temporal basis: ``n_basis`` functions sampled on ``window`` lags.

    Subclasses are frozen dataclasses that define ``n_basis``, ``window`` and
    :meth:`matrix`.

    Attributes
    ----------
    n_basis : int
        Number of basis functions (columns of :meth:`matrix`).
    window : int
        Number of lags, in bins (rows of :meth:`matrix`).
    """

    @abc.abstractmethod
    def matrix(self) -> np.ndarray:
        """The basis sampled on the lags.

        Returns
        -------
        numpy.ndarray
            Float64 array of shape ``(lag, basis)`` = ``(window, n_basis)``; row ``k`` is
            the ``k``-th lag of the window, column ``b`` the ``b``-th basis function.
        """

    def reconstruct(self, weights) -> jax.Array:
        """Filter in time from basis weights: ``weights @ matrix().T``.

        Parameters
        ----------
        weights : array_like, shape (..., basis)
            Basis weights; leading axes (neurons, posterior draws, ...) are kept.

        Returns
        -------
        jax.Array, shape (..., lag)
            The filter at each lag of the window (see :meth:`lags` for the times).

        Raises
        ------
        ValueError
            If the last axis of ``weights`` is not ``n_basis`` long.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.bases import Identity
        >>> Identity(3).reconstruct(np.array([1.0, 2.0, 3.0])).tolist()
        [1.0, 2.0, 3.0]
        """
        w = jnp.asarray(weights)
        if w.ndim == 0 or w.shape[-1] != self.n_basis:
            raise ValueError(
                f"weights must have shape (..., basis) with basis = n_basis = {self.n_basis}, "
                f"got shape {w.shape}"
            )
        dtype = w.dtype if jnp.issubdtype(w.dtype, jnp.floating) else jnp.result_type(float)
        return w.astype(dtype) @ jnp.asarray(self.matrix(), dtype=dtype).T

    def lags(self, bin_size: float, *, history: bool | None = None) -> np.ndarray:
        """Lag of each row of :meth:`matrix`, in seconds.

        Parameters
        ----------
        bin_size : float
            Bin width in seconds.
        history : bool or None, optional
            ``True``: rows are lags ``1, 2, ..., window`` bins (spike history / coupling);
            ``False``: lags ``0, 1, ..., window - 1`` (stimulus filter). ``None`` (default)
            uses the basis's own ``history`` flag where it has one, else ``False``.

        Returns
        -------
        numpy.ndarray, shape (lag,)
            ``(k + s) * bin_size`` for row ``k``, with ``s = 1`` for history.

        Raises
        ------
        ValueError
            If ``bin_size`` is not positive, or ``history`` contradicts the basis's flag.

        Examples
        --------
        >>> from bayesneuro.bases import Identity
        >>> Identity(3).lags(0.01, history=True).round(3).tolist()
        [0.01, 0.02, 0.03]
        """
        bin_size = _as_float("bin_size", bin_size)
        if bin_size <= 0:
            raise ValueError(f"bin_size must be > 0 seconds, got {bin_size}")
        shift = int(_resolve_history(self, history))
        return (np.arange(self.window) + shift) * bin_size


@jax.tree_util.register_static
@dataclass(frozen=True)
class RaisedCosineLog(Basis):
    r"""Raised cosines equally spaced in log time (Pillow et al., 2008).

    The basis of the retinal-ganglion-cell GLM of Pillow et al. (2008), as built by
    ``makeBasis_PostSpike`` / ``makeBasis_StimKernel`` in GLMspiketools. Time is warped
    by :math:`y(t) = \log(t + a)` with the offset :math:`a`; in warped time the bump
    centres :math:`c_j` are equally spaced by :math:`\Delta` and

    .. math::

        B_j(t) = \tfrac12\left[\cos\left(\operatorname{clip}\left(
        \frac{\pi\,(y(t) - c_j)}{2\Delta}, -\pi, \pi\right)\right) + 1\right].

    Bumps are narrow at short lags, where filters change fast (refractoriness, bursts),
    and broad at long lags. Each bump spans four spacings, so in the interior
    :math:`c_0 + \Delta \le y(t) \le c_{n-1} - \Delta` the bumps sum to exactly 2 (a
    partition of unity up to that factor; divide by 2 for unit sum).

    Parameters
    ----------
    n_basis : int
        Number of bumps (``>= 1``).
    window : int, keyword-only
        Number of lags in bins (``>= 1``). Row ``k`` of :meth:`matrix` is the basis at
        :math:`t = k` bins from the first lag of the window.
    first_peak : float, default 0.0
        Peak of the first bump, in bins from the first lag (``0 <= first_peak < window``).
    last_peak : float, optional
        Peak of the last bump, in bins (``first_peak < last_peak < window``). Default:
        chosen so that the last bump falls to zero exactly at ``t = window``, the first
        lag outside the window. With ``n_basis == 1`` it must be left out (or equal
        ``first_peak``); the single bump then also ends at ``t = window``.
    offset : float, default 1.0
        The offset :math:`a > 0` of the log nonlinearity (``b`` in GLMspiketools). Small
        offsets crowd the bumps at short lags; large offsets make the spacing nearly
        linear.
    history : bool, default True
        ``True`` for spike-history / coupling filters (row ``k`` is ``k + 1`` bins after
        the spike, as in ``makeBasis_PostSpike``), ``False`` for stimulus filters (row
        ``k`` is lag ``k``, the current frame included). It labels the lags
        (:meth:`lags`); :func:`convolve` must be given the same flag, and raises if not.

    Attributes
    ----------
    peaks : numpy.ndarray, shape (basis,)
        Peak of each bump, in bins from the first lag.

    Raises
    ------
    ValueError
        For a non-integer or non-positive ``n_basis`` or ``window``, ``offset <= 0``, or
        peaks outside ``0 <= first_peak < last_peak < window``.

    See Also
    --------
    RaisedCosineLinear : the same bumps without the time warp.

    References
    ----------
    .. [1] J. W. Pillow, J. Shlens, L. Paninski, A. Sher, A. M. Litke, E. J. Chichilnisky
       and E. P. Simoncelli, "Spatio-temporal correlations and visual signalling in a
       complete neuronal population", *Nature* 454, 995-999 (2008).
       https://doi.org/10.1038/nature07140
    .. [2] GLMspiketools, ``makeBasis_PostSpike.m`` and ``makeBasis_StimKernel.m``,
       https://github.com/pillowlab/GLMspiketools

    Examples
    --------
    >>> from bayesneuro.bases import RaisedCosineLog
    >>> basis = RaisedCosineLog(5, window=100, first_peak=1.0, last_peak=40.0)
    >>> basis.matrix().shape
    (100, 5)
    >>> basis.peaks.round(1).tolist()
    [1.0, 3.3, 8.1, 18.3, 40.0]
    >>> int(basis.matrix()[:, 0].argmax())
    1
    """

    n_basis: int
    _: KW_ONLY
    window: int
    first_peak: float = 0.0
    last_peak: float | None = None
    offset: float = 1.0
    history: bool = True

    def __post_init__(self):
        n = _as_int("n_basis", self.n_basis, 1)
        window = _as_int("window", self.window, 1)
        offset = _as_float("offset", self.offset)
        if offset <= 0:
            raise ValueError(f"offset must be > 0 (log(t + offset) needs t + offset > 0), got {offset}")
        first = _as_float("first_peak", self.first_peak)
        if not 0 <= first < window:
            raise ValueError(f"first_peak must satisfy 0 <= first_peak < window = {window}, got {first}")
        last = self.last_peak
        if last is not None:
            last = _as_float("last_peak", last)
            if n == 1:
                if last != first:
                    raise ValueError(
                        f"with n_basis = 1 there is one peak: leave last_peak out or set it to "
                        f"first_peak = {first}, got last_peak = {last}"
                    )
            elif not first < last < window:
                raise ValueError(
                    f"peaks must satisfy first_peak < last_peak < window; got first_peak = {first}, "
                    f"last_peak = {last}, window = {window}"
                )
        history = _as_bool("history", self.history)
        for name, value in [
            ("n_basis", n), ("window", window), ("offset", offset),
            ("first_peak", first), ("last_peak", last), ("history", history),
        ]:
            object.__setattr__(self, name, value)

    def _warped_centres(self) -> tuple[np.ndarray, float]:
        """Bump centres in warped time and their spacing."""
        y0 = math.log(self.first_peak + self.offset)
        if self.last_peak is None or self.n_basis == 1:
            spacing = (math.log(self.window + self.offset) - y0) / (self.n_basis + 1)
            return y0 + spacing * np.arange(self.n_basis), spacing
        y1 = math.log(self.last_peak + self.offset)
        return np.linspace(y0, y1, self.n_basis), (y1 - y0) / (self.n_basis - 1)

    @property
    def peaks(self) -> np.ndarray:
        """Peak of each bump in bins from the first lag, shape ``(basis,)``."""
        centres, _ = self._warped_centres()
        peaks = np.exp(centres) - self.offset
        peaks[0] = self.first_peak
        if self.last_peak is not None:
            peaks[-1] = self.last_peak
        return peaks

    def matrix(self) -> np.ndarray:
        """The bumps on lags ``t = 0, ..., window - 1``, shape ``(lag, basis)``."""
        centres, spacing = self._warped_centres()
        y = np.log(np.arange(self.window, dtype=np.float64) + self.offset)
        return _raised_cosine(y[:, None] - centres[None, :], 2.0 * spacing)


@jax.tree_util.register_static
@dataclass(frozen=True)
class RaisedCosineLinear(Basis):
    r"""Raised cosines evenly spaced over the window.

    Bump :math:`j` peaks at :math:`c_j = j\Delta` bins and is

    .. math::

        B_j(t) = \tfrac12\left[\cos\left(\operatorname{clip}\left(
        \frac{\pi\,(t - c_j)}{w\,\Delta}, -\pi, \pi\right)\right) + 1\right],

    nonzero for :math:`|t - c_j| < w\Delta`, with :math:`w` = ``width``. The spacing
    :math:`\Delta = \text{window} / (n - 1 + w)` puts the first peak at lag 0 and lets the
    last bump fall to zero exactly at ``t = window``, so a filter built from it goes
    smoothly to zero at the end of the window. ``width = 2`` gives the four-fold overlap
    of :class:`RaisedCosineLog` (as in nemos); when ``2 * width`` is an integer ``>= 2``
    the bumps sum to exactly ``width`` for :math:`(w - 1)\Delta \le t \le (n - w)\Delta`
    (``width = 1``: a partition of unity).

    Parameters
    ----------
    n_basis : int
        Number of bumps (``>= 1``).
    window : int, keyword-only
        Number of lags in bins (``>= 1``).
    width : float, default 2.0
        Half-width of each bump in units of the peak spacing (``> 0``).

    Attributes
    ----------
    peaks : numpy.ndarray, shape (basis,)
        Peak of each bump, in bins from the first lag.

    Raises
    ------
    ValueError
        For a non-positive ``n_basis``, ``window`` or ``width``.

    Examples
    --------
    >>> from bayesneuro.bases import RaisedCosineLinear
    >>> basis = RaisedCosineLinear(4, window=10, width=1.0)
    >>> basis.peaks.round(2).tolist()
    [0.0, 2.5, 5.0, 7.5]
    >>> basis.matrix().sum(axis=1).round(12).tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.904508497187, 0.345491502813]
    """

    n_basis: int
    _: KW_ONLY
    window: int
    width: float = 2.0

    def __post_init__(self):
        n = _as_int("n_basis", self.n_basis, 1)
        window = _as_int("window", self.window, 1)
        width = _as_float("width", self.width)
        if width <= 0:
            raise ValueError(f"width must be > 0 (in units of the peak spacing), got {width}")
        object.__setattr__(self, "n_basis", n)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "width", width)

    @property
    def spacing(self) -> float:
        """Distance between neighbouring peaks, in bins."""
        return self.window / (self.n_basis - 1 + self.width)

    @property
    def peaks(self) -> np.ndarray:
        """Peak of each bump in bins from the first lag, shape ``(basis,)``."""
        return self.spacing * np.arange(self.n_basis, dtype=np.float64)

    def matrix(self) -> np.ndarray:
        """The bumps on lags ``t = 0, ..., window - 1``, shape ``(lag, basis)``."""
        t = np.arange(self.window, dtype=np.float64)
        return _raised_cosine(t[:, None] - self.peaks[None, :], self.width * self.spacing)


@jax.tree_util.register_static
@dataclass(frozen=True)
class BSpline(Basis):
    """Clamped B-splines on uniform knots over the lags.

    The spline domain is ``[0, window - 1]`` bins, with ``order`` repeated knots at each end
    and ``n_basis - order`` interior knots evenly spaced between them. The columns are
    non-negative and sum to 1 at every lag (partition of unity), so a constant filter is
    in the span. Built with :meth:`scipy.interpolate.BSpline.design_matrix`.

    Parameters
    ----------
    n_basis : int
        Number of splines (``order <= n_basis <= window``).
    window : int, keyword-only
        Number of lags in bins.
    order : int, default 4
        Spline order = polynomial degree + 1 (4: cubic).

    Attributes
    ----------
    knots : numpy.ndarray, shape (n_basis + order,)
        The full knot vector, in bins.

    Raises
    ------
    ValueError
        If ``order < 1``, ``n_basis < order`` or ``n_basis > window``.

    Examples
    --------
    >>> from bayesneuro.bases import BSpline
    >>> basis = BSpline(6, window=50)
    >>> basis.matrix().shape
    (50, 6)
    >>> bool(abs(basis.matrix().sum(axis=1) - 1).max() < 1e-12)
    True
    """

    n_basis: int
    _: KW_ONLY
    window: int
    order: int = 4

    def __post_init__(self):
        order = _as_int("order", self.order, 1)
        n = _as_int("n_basis", self.n_basis, order)
        window = _as_int("window", self.window, 1)
        if n > window:
            raise ValueError(
                f"n_basis = {n} B-splines on window = {window} lags would be linearly "
                "dependent: need n_basis <= window"
            )
        object.__setattr__(self, "n_basis", n)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "order", order)

    @property
    def knots(self) -> np.ndarray:
        """Knot vector in bins: ``order`` repeated end knots around uniform interior knots."""
        end = float(max(self.window - 1, 1))
        interior = np.linspace(0.0, end, self.n_basis - self.order + 2)[1:-1]
        return np.concatenate([np.zeros(self.order), interior, np.full(self.order, end)])

    def matrix(self) -> np.ndarray:
        """The splines on lags ``0, ..., window - 1``, shape ``(lag, basis)``."""
        t = np.arange(self.window, dtype=np.float64)
        design = _interpolate.BSpline.design_matrix(t, self.knots, self.order - 1)
        return np.asarray(design.toarray(), dtype=np.float64)


@jax.tree_util.register_static
@dataclass(frozen=True)
class Identity(Basis):
    """One basis function per lag: an unconstrained filter (``n_basis == window``).

    Parameters
    ----------
    window : int
        Number of lags in bins (``>= 1``).

    Examples
    --------
    >>> from bayesneuro.bases import Identity
    >>> Identity(3).matrix().tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """

    window: int

    def __post_init__(self):
        object.__setattr__(self, "window", _as_int("window", self.window, 1))

    @property
    def n_basis(self) -> int:
        """Equal to ``window``."""
        return self.window

    def matrix(self) -> np.ndarray:
        """The identity, shape ``(lag, basis)`` = ``(window, window)``."""
        return np.eye(self.window)


def orthogonalize(basis: Basis | np.ndarray, *, rtol: float | None = None) -> np.ndarray:
    """Orthonormal columns spanning the same space as a basis.

    Like ``orth`` in GLMspiketools' ``makeBasis_PostSpike``: the left singular vectors
    of the basis matrix whose singular values exceed ``rtol * max(singular value)``.
    Each column's sign is fixed so its largest-magnitude entry is positive.

    Parameters
    ----------
    basis : Basis or array_like, shape (lag, basis)
        The basis.
    rtol : float, optional
        Relative cut-off for dropping directions. Default ``max(lag, basis) * eps``.

    Returns
    -------
    numpy.ndarray, shape (lag, rank)
        Orthonormal columns (``Q.T @ Q = I``); ``rank < n_basis`` only when the basis
        was rank deficient. Pass it to :func:`convolve` like any basis matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.bases import RaisedCosineLog, orthogonalize
    >>> q = orthogonalize(RaisedCosineLog(4, window=30))
    >>> q.shape, bool(np.allclose(q.T @ q, np.eye(4)))
    ((30, 4), True)
    """
    matrix = _basis_matrix(basis)
    matrix = np.asarray(matrix, dtype=np.float64)
    u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    if rtol is None:
        rtol = max(matrix.shape) * np.finfo(np.float64).eps
    u = u[:, s > _as_float("rtol", rtol) * s.max()]
    pivot = np.abs(u).argmax(axis=0)
    return u * np.sign(u[pivot, np.arange(u.shape[1])])


# ----------------------------------------------------------------------------- convolution

# Target number of output elements per loop step of the blocked FFT: the complex
# intermediates stay small and the output is written in place, once.
_STEP_ELEMENTS = 2**20


def _basis_matrix(basis):
    """``(lag, basis)`` matrix of a Basis or an array, validated."""
    if isinstance(basis, Basis):
        return basis.matrix()
    if isinstance(basis, jax.core.Tracer):
        matrix = basis
    else:
        try:
            matrix = np.asarray(basis, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"basis must be a Basis or a (lag, basis) float array, got {type(basis).__name__}"
            ) from None
        if not np.all(np.isfinite(matrix)):
            raise ValueError("basis matrix contains NaN or inf")
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"basis matrix must be 2-D (lag, basis) and non-empty, got shape {matrix.shape}")
    return matrix


def _fft_size(n_time: int, n_taps: int) -> int:
    """Block FFT length: a power of two >= 4 taps (and >= 256), or one block for short x."""
    nfft = 1 << max(8, (4 * n_taps - 1).bit_length())
    single = 1 << (n_time + n_taps - 2).bit_length()
    return min(nfft, single)


@partial(jit, static_argnames=("shift",))
def _causal_conv(x, matrix, shift: int):
    """Overlap-save FFT convolution: ``out[t, c, b] = sum_k B[k, b] x[t - k - shift, c]``."""
    n_time, n_channel = x.shape
    n_lag, n_basis = matrix.shape
    n_taps = n_lag + shift
    taps = jnp.pad(matrix, ((shift, 0), (0, 0)))
    nfft = _fft_size(n_time, n_taps)
    step = nfft - n_taps + 1  # new output bins per FFT block
    n_block = -(-n_time // step)
    group = max(1, min(n_block, _STEP_ELEMENTS // (nfft * n_channel * n_basis)))
    span = group * step  # output bins per loop step
    n_out = max(n_time, span)
    n_step = -(-n_out // span)
    padded = jnp.pad(x, ((n_taps - 1, n_out - n_time), (0, 0)))
    taps_f = jnp.fft.rfft(taps.T, n=nfft, axis=-1)  # (basis, freq)
    gather = (np.arange(group) * step)[:, None] + np.arange(nfft)[None, :]

    def body(i, out):
        # The last step is moved back to end at n_out; the rows it recomputes are identical.
        start = jnp.minimum(i * span, n_out - span)
        seg = lax.dynamic_slice_in_dim(padded, start, span + n_taps - 1, axis=0)
        blocks = jnp.swapaxes(seg[gather], 1, 2)  # (group, channel, nfft), time last
        x_f = jnp.fft.rfft(blocks, axis=-1)
        y = jnp.fft.irfft(x_f[:, :, None, :] * taps_f, n=nfft, axis=-1)  # (group, channel, basis, nfft)
        y = jnp.transpose(y[..., n_taps - 1 :], (0, 3, 1, 2)).reshape(span, n_channel, n_basis)
        return lax.dynamic_update_slice_in_dim(out, y, start, axis=0)

    out = lax.fori_loop(0, n_step, body, jnp.zeros((n_out, n_channel, n_basis), x.dtype))
    return out[:n_time]


@partial(jit, static_argnames=("shift", "n_padded"))
def _segment_conv(x, matrix, where, shift: int, n_padded: int):
    """Convolve trial segments separately: scatter them apart with zero gaps, convolve, gather."""
    spread = jnp.zeros((n_padded, x.shape[1]), x.dtype).at[where].set(x)
    return _causal_conv(spread, matrix, shift)[where]


@partial(jit, static_argnames=("shift",))
def _masked_conv(x, matrix, trial_ids, shift: int):
    """Trial-aware convolution for traced ``trial_ids``: blocked lag-matrix products with
    the lags that reach before the start of the current trial segment masked out."""
    n_time, n_channel = x.shape
    n_lag, n_basis = matrix.shape
    n_taps = n_lag + shift
    taps = jnp.pad(matrix, ((shift, 0), (0, 0)))
    t = jnp.arange(n_time)
    starts = jnp.concatenate([jnp.ones(1, bool), trial_ids[1:] != trial_ids[:-1]])
    position = t - lax.cummax(jnp.where(starts, t, 0))  # bins since the segment started
    rows = int(np.clip(2**22 // (n_taps * n_channel), 8, 1024))
    rows = min(rows, n_time)
    n_block = -(-n_time // rows)
    padded = jnp.pad(x, ((n_taps - 1, n_block * rows - n_time), (0, 0)))
    position = jnp.pad(position, (0, n_block * rows - n_time))
    lag = np.arange(n_taps)
    gather = np.arange(rows)[:, None] + (n_taps - 1) - lag[None, :]  # (row, lag)

    def one_block(i):
        seg = lax.dynamic_slice_in_dim(padded, i * rows, rows + n_taps - 1, axis=0)
        pos = lax.dynamic_slice_in_dim(position, i * rows, rows, axis=0)
        lagged = seg[gather] * (pos[:, None] >= lag[None, :])[..., None]  # (row, lag, channel)
        return jnp.einsum("rlc,lb->rcb", lagged, taps)

    out = lax.map(one_block, jnp.arange(n_block))
    return out.reshape(n_block * rows, n_channel, n_basis)[:n_time]


def convolve(x, basis, *, history: bool | None = None, trial_ids=None) -> jax.Array:
    r"""Causal convolution of signals with each basis function: GLM filter features.

    .. math::

        \text{out}[t, c, b] = \sum_{k=0}^{L-1} B[k, b]\, x[t - k - s, c],

    with ``B`` the ``(lag, basis)`` matrix, ``L`` its number of lags, ``s = 1`` for
    ``history=True`` (spike history and coupling: the current bin is excluded, so a
    neuron's own spike cannot predict itself) and ``s = 0`` for ``history=False``
    (stimulus filters: the current frame is included). Bins before the start of the
    recording, or of the current trial segment, count as zero: causal, no wrap-around.
    A window longer than the recording is fine.

    A filter with weights ``w`` then acts as ``out @ w``, i.e. ``out[t, c] @ w`` equals
    ``sum_j h[j] x[t - j - s, c]`` with ``h = basis.reconstruct(w)``.

    Parameters
    ----------
    x : array_like, shape (time,) or (time, channel)
        Stimulus, or spike counts with ``channel`` = ``neuron``. Integer and boolean
        input is cast to the default float dtype; float32 stays float32.
    basis : Basis or array_like, shape (lag, basis)
        Temporal basis.
    history : bool or None, default None
        Exclude the current bin (``True``) or include it (``False``). ``None`` (default)
        takes the flag of a basis that has one (:class:`RaisedCosineLog`), else ``False``. A basis
        built with the other flag is an error, so stimulus and history conventions
        cannot be mixed up silently.
    trial_ids : array_like of int, shape (time,), optional
        Trial label of each bin. No lag reaches across a change of label: each
        contiguous run of equal labels is convolved as if it were its own recording
        (a label that comes back later starts a new segment).

    Returns
    -------
    jax.Array, shape (time, channel, basis), or (time, basis) for 1-D ``x``
        The features.

    Raises
    ------
    ValueError
        If ``x`` is not 1-D or 2-D, is empty, or holds NaN or inf; if the basis matrix
        is not 2-D; if ``history`` contradicts the basis; or if ``trial_ids`` is not 1-D
        integer labels of the same length as ``x``.

    Notes
    -----
    Method: overlap-save FFT convolution in blocks (FFT length a power of two
    ``>= 4 (L + s)``, at least 256), looped with :func:`jax.lax.fori_loop` over groups of
    blocks that write into the output in place, so memory stays at the size of the
    output and the cost does not grow with ``L``. Chosen by benchmark on a 2-core CPU:
    1e6 bins x 50 channels x 10 basis functions with ``L = 100`` took about 6 s in
    float64 (9 s on the first call, with compilation; 4 GB output) and 4 s in float32,
    measured while other jobs loaded the machine. At 1e5 bins the blocked FFT was about
    twice as fast as a blocked lag-matrix product (``L = 100``), and
    :func:`jax.lax.conv_general_dilated` (a depthwise convolution, slow on CPU) was ten
    times slower at ``L = 10`` and did not finish in minutes at ``L = 100``. Results match
    direct summation to ~1e-14 relative in float64 (~1e-7 in float32); exact zeros may
    come out as round-off of that size.

    With concrete ``trial_ids`` the segments are scattered into one signal with
    ``L + s - 1`` zeros between them and convolved once by FFT. Under :func:`jax.jit`
    with traced ``trial_ids`` the segment layout is not known when tracing, so a
    blocked lag-matrix product with the cross-trial lags masked out is used instead
    (exact as well, cost proportional to ``L``).

    ``convolve`` is jit-compatible: ``jax.jit(convolve, static_argnames="history")``
    (bases are static pytrees; a basis matrix may be traced). The NaN/inf check on
    ``x`` is skipped for traced ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.bases import Identity, RaisedCosineLog, convolve
    >>> spikes = np.zeros((6, 2)); spikes[1, 0] = 1.0
    >>> out = convolve(spikes, Identity(3), history=True)
    >>> out.shape
    (6, 2, 3)
    >>> np.asarray(out[:, 0, :]).round(6).astype(int).tolist()  # the spike, 1, 2, 3 bins later
    [[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]
    >>> convolve(np.ones(1000), RaisedCosineLog(5, window=100), history=True).shape
    (1000, 5)
    """
    matrix = _basis_matrix(basis)
    shift = int(_resolve_history(basis, history))

    if not isinstance(x, jax.Array):
        x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be 1-D (time,) or 2-D (time, channel), got shape {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"x must have at least one time bin and one channel, got shape {x.shape}")
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise ValueError(f"x must be real, got dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    # numpy input stays numpy until the jitted convolution (an eager jnp op compiles a program)
    if not isinstance(x, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(x))):
        bad = np.argwhere(~np.isfinite(np.asarray(x)))[0]
        raise ValueError(f"x contains NaN or inf (first at index {tuple(int(i) for i in bad)})")
    vector = x.ndim == 1
    if vector:
        x = x[:, None]
    n_time = x.shape[0]
    matrix = np.asarray(matrix, dtype=x.dtype) if isinstance(x, np.ndarray) else jnp.asarray(matrix, dtype=x.dtype)

    if trial_ids is None:
        out = _causal_conv(x, matrix, shift)
    else:
        if not isinstance(trial_ids, jax.Array):
            trial_ids = np.asarray(trial_ids)
        if trial_ids.ndim != 1 or trial_ids.shape[0] != n_time:
            raise ValueError(
                f"trial_ids must have shape (time,) = ({n_time},) to match x, got shape {trial_ids.shape}"
            )
        if not jnp.issubdtype(trial_ids.dtype, jnp.integer):
            raise ValueError(f"trial_ids must be integer labels, got dtype {trial_ids.dtype}")
        gap = matrix.shape[0] + shift - 1
        if isinstance(trial_ids, jax.core.Tracer):
            out = _masked_conv(x, matrix, trial_ids, shift)
        elif gap == 0:  # a single current-bin tap never crosses a boundary
            out = _causal_conv(x, matrix, shift)
        else:
            ids = np.asarray(trial_ids)
            segment = np.concatenate([[0], np.cumsum(ids[1:] != ids[:-1])])
            where = np.arange(n_time) + gap * segment
            out = _segment_conv(x, matrix, where, shift, int(where[-1]) + 1)
    return out[:, 0, :] if vector else out


def design_matrix(x, basis, *, history: bool | None = None, trial_ids=None) -> jax.Array:
    """:func:`convolve` flattened to a regression design matrix.

    Parameters
    ----------
    x, basis, history, trial_ids
        As in :func:`convolve`.

    Returns
    -------
    jax.Array, shape (time, channel * basis)
        Channel-major columns: column ``c * n_basis + b`` is channel ``c`` convolved
        with basis function ``b``. For 1-D ``x``, shape ``(time, basis)``.

    Raises
    ------
    ValueError
        As in :func:`convolve`.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.bases import BSpline, design_matrix
    >>> counts = np.random.default_rng(0).poisson(0.2, size=(500, 3))
    >>> design_matrix(counts, BSpline(5, window=20), history=True).shape
    (500, 15)
    """
    out = convolve(x, basis, history=history, trial_ids=trial_ids)
    return out if out.ndim == 2 else out.reshape(out.shape[0], -1)
