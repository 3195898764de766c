r"""Cell assemblies: groups of neurons that fire together, found from the count correlations.

The method of Lopes-dos-Santos, Ribeiro & Tort (2013) as neuroscientists run it today:

1. z-score each neuron's counts, :math:`z_{tn} = (x_{tn} - \bar x_n) / s_n`, and form the
   correlation matrix :math:`C = Z^\top Z / T` (``T`` bins, ``N`` neurons);
2. the number of assemblies is the number of eigenvalues of :math:`C` above the upper edge of
   the Marchenko-Pastur law, :math:`\lambda_{+} = (1 + \sqrt{N / T})^2`: the largest eigenvalue
   that a correlation matrix of ``N`` independent neurons over ``T`` bins reaches (as
   :math:`T \to \infty`);
3. the assembly patterns (one weight per neuron) are those eigenvectors (``method="pca"``), or
   independent components of the data projected on them (``method="ica"``, the default:
   assemblies that share neurons separate, where PCA mixes them);
4. each assembly's activation strength over time is
   :math:`R_k(t) = z_t^\top P_k z_t` with :math:`P_k = w_k w_k^\top` and its diagonal set to
   zero, so a single neuron firing alone does not activate an assembly (Peyrache et al. 2009).

The correlation matrix is accumulated over chunks of bins (:func:`correlation_matrix`), so a
recording of any length is analysed in memory ``O(N^2 + chunk x N)``; only the ``T x K``
projections on the ``K`` significant components are held for ICA.

References
----------
Lopes-dos-Santos V, Ribeiro S, Tort ABL (2013). Detecting cell assemblies in large neuronal
populations. J Neurosci Methods 220:149-166.
Peyrache A, Khamassi M, Benchenane K, Wiener SI, Battaglia FP (2009). Replay of rule-learning
related neural patterns in the prefrontal cortex during sleep. Nat Neurosci 12:919-926.
Hyvärinen A (1999). Fast and robust fixed-point algorithms for independent component analysis.
IEEE Trans Neural Netw 10:626-634.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np

#: Bins per chunk of the streamed passes (65,536 x 500 neurons of float64 is 262 MB).
CHUNK = 16_384
#: FastICA: most fixed-point iterations, and the tolerance on 1 - |<w_new, w_old>|.
ICA_MAX_ITER = 500
ICA_TOL = 1e-10

__all__ = [
    "AssemblyPatterns",
    "CorrelationStats",
    "assembly_activity",
    "assembly_members",
    "assembly_patterns",
    "correlation_matrix",
    "marchenko_pastur",
]


class CorrelationStats(NamedTuple):
    """Streamed moments of a ``(time, neuron)`` count matrix.

    Attributes
    ----------
    corr : numpy.ndarray, shape (neuron, neuron)
        Pearson correlation matrix (``ddof=0``: :math:`Z^\\top Z / T` of the z-scored counts).
    mean : numpy.ndarray, shape (neuron,)
        Mean count per bin.
    std : numpy.ndarray, shape (neuron,)
        Standard deviation of the counts (``ddof=0``).
    n_time : int
        Bins.
    """

    corr: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n_time: int


class AssemblyPatterns(NamedTuple):
    """Assemblies found by :func:`assembly_patterns`.

    Attributes
    ----------
    patterns : numpy.ndarray, shape (assembly, neuron)
        Unit-length weight vectors, each signed so that its largest-magnitude weight is positive
        (a neuron's weight is its membership: large positive weights are the assembly's members).
    eigenvalues : numpy.ndarray, shape (neuron,)
        Eigenvalues of the correlation matrix, descending.
    threshold : float
        The Marchenko-Pastur upper edge :math:`(1 + \\sqrt{N/T})^2`.
    n_assemblies : int
        Eigenvalues above ``threshold``.
    method : str
        ``"ica"`` or ``"pca"``.
    """

    patterns: np.ndarray
    eigenvalues: np.ndarray
    threshold: float
    n_assemblies: int
    method: str


def _check_counts(counts: Any) -> Any:
    """A 2-D numeric ``(time, neuron)`` array-like (numpy array, memmap or h5py dataset)."""
    shape = getattr(counts, "shape", None)
    if shape is None:
        counts = np.asarray(counts)
        shape = counts.shape
    if len(shape) != 2:
        raise ValueError(f"counts must be 2-D with dims (time, neuron), got shape {tuple(shape)}")
    dtype = np.dtype(getattr(counts, "dtype", np.float64))
    if dtype.kind not in "biuf":
        raise TypeError(f"counts must be numeric, got dtype {dtype}")
    if shape[1] < 2:
        raise ValueError(f"assemblies need at least 2 neurons, got {shape[1]}")
    return counts


def _chunks(n_time: int, chunk_size: int):
    for a in range(0, n_time, chunk_size):
        yield a, min(a + chunk_size, n_time)


def _block(counts: Any, a: int, b: int) -> np.ndarray:
    x = np.asarray(counts[a:b], dtype=np.float64)
    if not np.all(np.isfinite(x)):
        i, j = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"counts contain NaN or infinite values (first at time bin {a + i}, neuron column {j})")
    return x


def correlation_matrix(counts: Any, *, chunk_size: int = CHUNK) -> CorrelationStats:
    """Pearson correlations between neurons, accumulated over chunks of bins.

    Parameters
    ----------
    counts : array_like, shape (time, neuron)
        Spike counts (any real values). Sliced ``counts[a:b]`` one chunk at a time, so a
        ``numpy.memmap`` or an ``h5py`` dataset larger than memory works.
    chunk_size : int, default 16384
        Bins per chunk.

    Returns
    -------
    CorrelationStats

    Raises
    ------
    ValueError
        Fewer than 2 bins or 2 neurons, NaN or infinite counts, or a constant neuron (zero
        variance: a silent neuron has no correlation).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.assemblies import correlation_matrix
    >>> x = np.random.default_rng(0).poisson(2.0, (1000, 3))
    >>> np.allclose(correlation_matrix(x, chunk_size=128).corr, np.corrcoef(x, rowvar=False))
    True
    """
    counts = _check_counts(counts)
    n_time, n = int(counts.shape[0]), int(counts.shape[1])
    if n_time < 2:
        raise ValueError(f"counts need at least 2 time bins, got {n_time}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    shift = None
    s1 = np.zeros(n)
    s2 = np.zeros((n, n))
    for a, b in _chunks(n_time, int(chunk_size)):
        x = _block(counts, a, b)
        if shift is None:  # centring on the first chunk's mean keeps the sums well conditioned
            shift = x.mean(axis=0)
        x -= shift
        s1 += x.sum(axis=0)
        s2 += x.T @ x
    m = s1 / n_time
    cov = s2 / n_time - np.outer(m, m)
    var = np.diag(cov).copy()
    const = np.flatnonzero(var <= 1e-12 * np.maximum(1.0, np.abs(shift + m) ** 2))
    if const.size:
        raise ValueError(
            f"neuron column(s) {const[:10].tolist()} are constant over the recording (zero variance, e.g. "
            "silent): drop them before looking for assemblies"
        )
    std = np.sqrt(var)
    corr = cov / np.outer(std, std)
    corr = 0.5 * (corr + corr.T)
    np.fill_diagonal(corr, 1.0)
    return CorrelationStats(corr, shift + m, std, n_time)


def marchenko_pastur(n_time: int, n_neuron: int) -> tuple[float, float]:
    """Edges of the Marchenko-Pastur law for the correlation matrix of independent neurons.

    Parameters
    ----------
    n_time, n_neuron : int
        Bins ``T`` and neurons ``N`` (``N <= T``).

    Returns
    -------
    lower, upper : float
        :math:`(1 \\mp \\sqrt{N/T})^2`.

    Raises
    ------
    ValueError
        For ``N > T``: the recording is too short for its number of neurons (the correlation
        matrix is singular and the law has no lower edge).

    Examples
    --------
    >>> from bayesneuro.density.assemblies import marchenko_pastur
    >>> [round(v, 4) for v in marchenko_pastur(10_000, 100)]
    [0.81, 1.21]
    """
    n_time, n_neuron = int(n_time), int(n_neuron)
    if n_neuron < 1 or n_time < 1:
        raise ValueError(f"need positive sizes, got n_time={n_time}, n_neuron={n_neuron}")
    if n_neuron > n_time:
        raise ValueError(
            f"the recording is too short for assembly detection: {n_time} bins for {n_neuron} neurons "
            "(the Marchenko-Pastur bound needs at least as many bins as neurons; use shorter bins or a longer recording)"
        )
    q = math.sqrt(n_neuron / n_time)
    return (1.0 - q) ** 2, (1.0 + q) ** 2


def _signed_unit(v: np.ndarray) -> np.ndarray:
    """Columns of ``v`` scaled to unit length, each with its largest-magnitude entry positive."""
    v = v / np.linalg.norm(v, axis=0, keepdims=True)
    idx = np.argmax(np.abs(v), axis=0)
    return v * np.sign(v[idx, np.arange(v.shape[1])])


def _sym_decorrelate(W: np.ndarray) -> np.ndarray:
    """``(W W^T)^{-1/2} W``: the nearest matrix with orthonormal rows."""
    s, u = np.linalg.eigh(W @ W.T)
    return (u / np.sqrt(np.maximum(s, 1e-300))) @ u.T @ W


def fast_ica(Y: np.ndarray, *, key: Any, max_iter: int = ICA_MAX_ITER, tol: float = ICA_TOL) -> tuple[np.ndarray, int]:
    """Symmetric FastICA with the log-cosh contrast on whitened data.

    Parameters
    ----------
    Y : numpy.ndarray, shape (time, component)
        Whitened data (zero mean, identity covariance).
    key : jax.random key or int
        The random orthogonal start.
    max_iter, tol
        Iteration cap; stop when every row changes direction by less than ``tol``
        (``1 - |<w_new, w_old>|``).

    Returns
    -------
    W : numpy.ndarray, shape (component, component)
        Orthonormal unmixing matrix: the sources are ``Y @ W.T``.
    n_iter : int

    Warns
    -----
    ConvergenceWarning
        At ``max_iter`` without converging (the components are then not reliable).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.assemblies import fast_ica
    >>> rng = np.random.default_rng(0)
    >>> S = np.c_[rng.laplace(size=5000), rng.uniform(-1.7, 1.7, 5000)]
    >>> A = np.array([[1.0, 0.5], [0.3, 1.0]])
    >>> X = S @ A.T
    >>> d, E = np.linalg.eigh(np.cov(X, rowvar=False))
    >>> Y = (X - X.mean(0)) @ E / np.sqrt(d)
    >>> W, _ = fast_ica(Y, key=0)
    >>> r = np.corrcoef(np.c_[Y @ W.T, S], rowvar=False)[:2, 2:]
    >>> bool(np.all(np.sort(np.abs(r).max(axis=1)) > 0.99))
    True
    """
    from ..estimator import numpy_generator

    rng = numpy_generator(key, why="fast_ica (its random start)")
    n_t, n_c = Y.shape
    W = _sym_decorrelate(rng.normal(size=(n_c, n_c)))
    for it in range(1, int(max_iter) + 1):
        U = Y @ W.T  # (time, component)
        G = np.tanh(U)
        W_new = (G.T @ Y) / n_t - np.mean(1.0 - G**2, axis=0)[:, None] * W
        W_new = _sym_decorrelate(W_new)
        change = float(np.max(np.abs(np.abs(np.sum(W_new * W, axis=1)) - 1.0)))
        W = W_new
        if change < tol:
            return W, it
    from ..diagnostics import ConvergenceWarning

    warnings.warn(
        f"FastICA stopped at max_iter={max_iter} before converging (last change {change:.2e} > tol={tol:.0e}); "
        "the assembly patterns are not reliable: raise max_iter, or use method='pca'",
        ConvergenceWarning,
        stacklevel=2,
    )
    return W, int(max_iter)


def _projections(counts: Any, stats: CorrelationStats, V: np.ndarray, chunk_size: int) -> np.ndarray:
    """``Z @ V`` (time, k), streamed over chunks of bins."""
    out = np.empty((stats.n_time, V.shape[1]))
    for a, b in _chunks(stats.n_time, chunk_size):
        out[a:b] = ((_block(counts, a, b) - stats.mean) / stats.std) @ V
    return out


def assembly_patterns(
    counts: Any,
    *,
    method: str = "ica",
    key: Any = None,
    stats: CorrelationStats | None = None,
    chunk_size: int = CHUNK,
    max_iter: int = ICA_MAX_ITER,
) -> AssemblyPatterns:
    """Cell assemblies: their number (Marchenko-Pastur) and their neuron weights (ICA or PCA).

    Parameters
    ----------
    counts : array_like, shape (time, neuron)
        Spike counts in bins (array, memmap or h5py dataset: read in chunks).
    method : {"ica", "pca"}
        ``"ica"``: independent components of the data projected on the significant principal
        components (Lopes-dos-Santos et al. 2013); ``"pca"``: the significant eigenvectors.
    key : jax.random key or int
        Required for ``"ica"`` (FastICA's random start); the same key gives the same patterns.
    stats : CorrelationStats, optional
        :func:`correlation_matrix` of ``counts``, if already computed.
    chunk_size : int, default 16384
        Bins per chunk of the streamed passes.
    max_iter : int
        FastICA's iteration cap.

    Returns
    -------
    AssemblyPatterns
        With ``n_assemblies == 0`` (and an empty ``patterns``) when no eigenvalue exceeds the
        bound.

    Raises
    ------
    ValueError
        Bad counts (see :func:`correlation_matrix`), fewer bins than neurons, or an unknown
        ``method``.
    TypeError
        ``key`` is None with ``method="ica"``.

    Examples
    --------
    Two planted assemblies of 5 neurons among 30:

    >>> import numpy as np
    >>> from bayesneuro.density.assemblies import assembly_patterns
    >>> rng = np.random.default_rng(1)
    >>> T = 20_000
    >>> rate = np.full((T, 30), 0.5)
    >>> for members in (range(0, 5), range(10, 15)):
    ...     on = rng.random(T) < 0.05
    ...     rate[np.ix_(on, list(members))] += 3.0
    >>> res = assembly_patterns(rng.poisson(rate), key=0)
    >>> res.n_assemblies
    2
    >>> sorted(sorted(np.flatnonzero(p > 0.3).tolist()) for p in res.patterns)
    [[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]]
    """
    if method not in ("ica", "pca"):
        raise ValueError(f"method must be 'ica' or 'pca', got {method!r}")
    counts = _check_counts(counts)
    if method == "ica" and key is None:
        raise TypeError(
            "a random `key` is required for method='ica' (FastICA's start), e.g. key=0; "
            "bayesneuro never chooses a seed for you"
        )
    stats = correlation_matrix(counts, chunk_size=chunk_size) if stats is None else stats
    n = stats.corr.shape[0]
    if int(counts.shape[1]) != n:
        raise ValueError(f"stats are for {n} neurons, counts have {counts.shape[1]}")
    _, upper = marchenko_pastur(stats.n_time, n)
    lam, E = np.linalg.eigh(stats.corr)
    lam, E = lam[::-1], E[:, ::-1]
    k = int(np.sum(lam > upper))
    if k == 0:
        return AssemblyPatterns(np.zeros((0, n)), lam, upper, 0, method)
    P = E[:, :k]
    if method == "pca":
        return AssemblyPatterns(_signed_unit(P).T, lam, upper, k, method)
    # whitened projections on the significant subspace: their covariance is the identity
    if int(counts.shape[0]) != stats.n_time:
        raise ValueError(f"stats are for {stats.n_time} bins, counts have {counts.shape[0]}")
    Y = _projections(counts, stats, P / np.sqrt(lam[:k]), int(chunk_size))
    W, _ = fast_ica(Y, key=key, max_iter=max_iter)
    V = (P / np.sqrt(lam[:k])) @ W.T  # sources = Z @ V
    return AssemblyPatterns(_signed_unit(V).T, lam, upper, k, method)


def assembly_activity(
    counts: Any,
    patterns: Any,
    *,
    stats: CorrelationStats | None = None,
    chunk_size: int = CHUNK,
) -> np.ndarray:
    """Activation strength of each assembly in each bin, :math:`R_k(t) = z_t^\\top P_k z_t`.

    ``P_k = w_k w_k^T`` with its diagonal set to zero, so
    :math:`R_k(t) = (z_t \\cdot w_k)^2 - \\sum_n z_{tn}^2 w_{kn}^2`: large only when several
    members fire together.

    Parameters
    ----------
    counts : array_like, shape (time, neuron)
        Counts of the recording to follow the assemblies in (the one they were found in, or
        another epoch of the same neurons: sleep after the task, say).
    patterns : array_like, shape (assembly, neuron), or AssemblyPatterns
    stats : CorrelationStats, optional
        Mean and standard deviation for the z-scores. Default: those of ``counts`` itself, the
        usual choice (each epoch z-scored on its own).
    chunk_size : int, default 16384

    Returns
    -------
    numpy.ndarray, shape (time, assembly)

    Raises
    ------
    ValueError
        Patterns and counts with different numbers of neurons, or bad counts.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.assemblies import assembly_activity
    >>> x = np.array([[0, 0, 0], [2, 2, 0], [2, 0, 0], [0, 0, 2]] * 10)
    >>> w = np.array([[1.0, 1.0, 0.0]]) / np.sqrt(2)
    >>> R = assembly_activity(x, w)
    >>> int(np.argmax(R[:4, 0]))  # the bin where both members fire
    1
    """
    counts = _check_counts(counts)
    W = np.asarray(patterns.patterns if isinstance(patterns, AssemblyPatterns) else patterns, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"patterns must be (assembly, neuron), got shape {W.shape}")
    if W.shape[1] != counts.shape[1]:
        raise ValueError(f"patterns have {W.shape[1]} neurons, counts {counts.shape[1]}")
    stats = correlation_matrix(counts, chunk_size=chunk_size) if stats is None else stats
    n_time = int(counts.shape[0])
    out = np.empty((n_time, W.shape[0]))
    for a, b in _chunks(n_time, int(chunk_size)):
        z = (_block(counts, a, b) - stats.mean) / stats.std
        out[a:b] = (z @ W.T) ** 2 - (z**2) @ (W**2).T
    return out


def assembly_members(patterns: Any, *, threshold: float | None = None) -> list[np.ndarray]:
    """The member neurons of each assembly: those whose weight exceeds ``threshold``.

    Parameters
    ----------
    patterns : array_like, shape (assembly, neuron), or AssemblyPatterns
        Unit-length patterns.
    threshold : float, optional
        Default :math:`1/\\sqrt{N}`: a member weighs more than its share of a uniform unit
        vector. (The often-used "mean + 2 SD of the weights" misses members of assemblies
        larger than about a tenth of the population, whose weights set the SD.)

    Returns
    -------
    list of numpy.ndarray
        For each assembly, the column indices of its members, ascending.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.assemblies import assembly_members
    >>> assembly_members(np.array([[0.6, 0.6, 0.52, 0.1]]))[0].tolist()
    [0, 1, 2]
    """
    W = np.asarray(patterns.patterns if isinstance(patterns, AssemblyPatterns) else patterns, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"patterns must be (assembly, neuron), got shape {W.shape}")
    thr = 1.0 / math.sqrt(W.shape[1]) if threshold is None else float(threshold)
    return [np.flatnonzero(w > thr) for w in W]
