r"""Spike-train communities: groups of neurons with similar spike trains, their number found by
modularity (Humphries 2011), with no number of groups given in advance.

1. Each neuron's counts are smoothed with a Gaussian of width ``sigma`` bins (within trials) and
   the similarity of two neurons is the cosine of the angle between their smoothed trains,
   :math:`A_{ij} = \langle f_i, f_j\rangle / (\|f_i\| \|f_j\|)`, ``A_ii = 0``.
2. A partition of the neurons into groups ``c`` is scored by its modularity (Newman 2006) on
   this weighted network,

   .. math:: Q = \frac{1}{2m} \sum_{ij} \Big(A_{ij} - \frac{k_i k_j}{2m}\Big) \delta(c_i, c_j),
      \quad k_i = \sum_j A_{ij},\ 2m = \sum_i k_i,

   the excess of within-group similarity over what the neurons' total similarities predict.
3. Partitions come from the eigenvectors of the modularity matrix ``B = A - k k^T / 2m`` with
   positive eigenvalues: k-means on the leading ``g - 1`` of them for each ``g`` up to one more
   than their number, keeping the partition of highest ``Q`` (a single group when ``B`` has no
   positive eigenvalue: no community structure).
4. Consensus: the spectral k-means is repeated with different random starts; the fraction of runs
   that put two neurons together is itself partitioned the same way, against the fraction
   expected from runs with the same group sizes and random labels, until every run agrees
   (Lancichinetti & Fortunato 2012, as Humphries' toolbox does).
5. The width ``sigma`` is chosen among candidates by the highest ``Q``, and the partition is
   tested against neurons shifted in time relative to one another (each by a random circular
   lag): structure counts only if its ``Q`` exceeds the shifted recordings' ``Q`` (``p_value``).

References
----------
Humphries MD (2011). Spike-train communities: finding groups of similar spike trains.
J Neurosci 31:2321-2336.
Newman MEJ (2006). Finding community structure in networks using the eigenvectors of matrices.
Phys Rev E 74:036104.
Lancichinetti A, Fortunato S (2012). Consensus clustering in complex networks. Sci Rep 2:336.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..estimator import numpy_generator

__all__ = [
    "CommunityResult",
    "consensus_communities",
    "modularity",
    "modularity_matrix",
    "spectral_partition",
    "spike_train_similarity",
]


class CommunityResult(NamedTuple):
    """Output of :func:`consensus_communities`.

    Attributes
    ----------
    labels : numpy.ndarray of int, shape (neuron,)
        Community of each neuron, ``0 .. n_communities - 1`` by decreasing size; all 0 (one
        community: no ensembles) when the structure is not significant.
    n_communities : int
    partition : numpy.ndarray of int, shape (neuron,)
        The consensus partition found, before the significance test.
    modularity : float
        ``Q`` of ``partition`` on the similarity network.
    consensus : numpy.ndarray, shape (neuron, neuron)
        Fraction of the spectral k-means runs that put each pair in the same group.
    similarity : numpy.ndarray, shape (neuron, neuron)
        The similarity network (at the chosen ``sigma``).
    sigma : float
        The Gaussian width (bins) used.
    null_modularity : numpy.ndarray, shape (shuffle,)
        ``Q`` found in each time-shifted recording (empty with ``n_shuffles=0``).
    p_value : float
        ``(1 + #{null Q >= Q}) / (1 + n_shuffles)``; NaN with ``n_shuffles=0``; 1 when the
        partition is a single community.
    significant : bool
        ``p_value <= alpha`` (True when the test was not run, False for a single community).
    """

    labels: np.ndarray
    n_communities: int
    partition: np.ndarray
    modularity: float
    consensus: np.ndarray
    similarity: np.ndarray
    sigma: float
    null_modularity: np.ndarray
    p_value: float
    significant: bool


def _as_counts(counts: Any) -> np.ndarray:
    from .._validation import _as_counts as check_counts

    x = check_counts(counts).astype(np.float64)
    if x.shape[1] < 3:
        raise ValueError(f"communities need at least 3 neurons, got {x.shape[1]}")
    if x.shape[0] < 2:
        raise ValueError(f"counts need at least 2 time bins, got {x.shape[0]}")
    silent = np.flatnonzero(~np.any(x != 0, axis=0))
    if silent.size:
        raise ValueError(f"neuron column(s) {silent[:10].tolist()} have no spikes: drop them before looking for communities")
    return x


def smooth_within_segments(x: np.ndarray, sigma: float, segment_ids: Any = None) -> np.ndarray:
    """Gaussian smoothing of ``x`` (time, ...) along time, ``sigma`` bins (0: unchanged), never
    across a change of ``segment_ids`` (zeros beyond each segment's ends)."""
    from scipy.ndimage import gaussian_filter1d

    if sigma <= 0:
        return x
    if segment_ids is None:
        return gaussian_filter1d(x, sigma, axis=0, mode="constant")
    seg = np.asarray(segment_ids)
    bounds = np.flatnonzero(seg[1:] != seg[:-1]) + 1
    return np.concatenate([gaussian_filter1d(p, sigma, axis=0, mode="constant") for p in np.split(x, bounds)])


def spike_train_similarity(counts: Any, *, sigma: float, segment_ids: Any = None) -> np.ndarray:
    """Cosine similarity of Gaussian-smoothed spike trains, ``(neuron, neuron)``, zero diagonal.

    Parameters
    ----------
    counts : array_like, shape (time, neuron)
        Spike counts in bins.
    sigma : float
        Standard deviation of the Gaussian kernel, in bins (> 0); 0 compares the bins as they are.
    segment_ids : array_like, shape (time,), optional
        Trial (or segment) label of each bin: the smoothing never crosses from one to the next.

    Returns
    -------
    numpy.ndarray, shape (neuron, neuron)

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.communities import spike_train_similarity
    >>> x = np.array([[1, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 1]])
    >>> spike_train_similarity(x, sigma=0).round(3).tolist()
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    x = _as_counts(counts)
    sigma = float(sigma)
    if not (sigma >= 0 and np.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite number of bins >= 0, got {sigma!r}")
    if segment_ids is not None and np.shape(segment_ids) != (x.shape[0],):
        raise ValueError(f"segment_ids must have {x.shape[0]} entries, got shape {np.shape(segment_ids)}")
    x = smooth_within_segments(x, sigma, segment_ids)
    norm = np.linalg.norm(x, axis=0)
    A = (x.T @ x) / np.outer(norm, norm)
    A = 0.5 * (A + A.T)
    np.fill_diagonal(A, 0.0)
    return A


def modularity_matrix(A: Any) -> np.ndarray:
    """``B = A - k k^T / 2m`` of a weighted undirected network ``A`` (non-negative, symmetric).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.communities import modularity_matrix
    >>> bool(np.allclose(modularity_matrix(np.ones((3, 3)) - np.eye(3)).sum(axis=1), 0))
    True
    """
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {A.shape}")
    if np.any(A < 0) or not np.allclose(A, A.T):
        raise ValueError("A must be symmetric with non-negative weights")
    k = A.sum(axis=1)
    two_m = k.sum()
    if two_m <= 0:
        raise ValueError("A has no edges (all similarities are zero)")
    return A - np.outer(k, k) / two_m


def modularity(A: Any, labels: Any) -> float:
    """Newman's modularity ``Q`` of the partition ``labels`` of the weighted network ``A``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.communities import modularity
    >>> A = np.kron(np.eye(2), np.ones((3, 3))) - np.eye(6)  # two disconnected triangles
    >>> round(modularity(A, [0, 0, 0, 1, 1, 1]), 3)
    0.5
    """
    A = np.asarray(A, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.shape != (A.shape[0],):
        raise ValueError(f"labels must have {A.shape[0]} entries, got shape {labels.shape}")
    B = modularity_matrix(A)
    same = labels[:, None] == labels[None, :]
    return float(np.sum(B * same) / A.sum())


def _kmeans(X: np.ndarray, k: int, rng: np.random.Generator, n_iter: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; labels ``(row,)``."""
    n = X.shape[0]
    centres = [X[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((X[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(X[rng.choice(n, p=p)])
    C = np.asarray(centres)
    labels = np.full(n, -1)
    for _ in range(n_iter):
        new = np.argmin(((X[:, None, :] - C[None]) ** 2).sum(-1), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            if np.any(labels == j):
                C[j] = X[labels == j].mean(axis=0)
    return labels


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0.. by decreasing group size (ties: by first member)."""
    groups = sorted((np.flatnonzero(labels == g) for g in np.unique(labels)), key=lambda m: (-m.size, m[0]))
    out = np.empty_like(labels)
    for i, m in enumerate(groups):
        out[m] = i
    return out


def spectral_partition(A: Any, *, key: Any, B: Any = None, n_starts: int = 10) -> tuple[np.ndarray, float]:
    """The highest-modularity partition from k-means on the modularity matrix's eigenvectors.

    Parameters
    ----------
    A : array_like, shape (neuron, neuron)
        Weighted network (symmetric, non-negative).
    key : jax.random key or int
        k-means starts.
    B : array_like, optional
        The matrix to partition, if not ``modularity_matrix(A)`` (consensus matrices use their own
        null model); its modularity is ``sum(B * same) / sum(A)``.
    n_starts : int, default 10
        k-means starts per number of groups.

    Returns
    -------
    labels : numpy.ndarray of int
    Q : float
        0 for the single group (no eigenvalue of ``B`` is positive).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.communities import spectral_partition
    >>> A = np.kron(np.eye(3), np.ones((4, 4))) - np.eye(12) + 0.01
    >>> labels, Q = spectral_partition(A, key=0)
    >>> labels.tolist()
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    """
    A = np.asarray(A, dtype=np.float64)
    B = modularity_matrix(A) if B is None else np.asarray(B, dtype=np.float64)
    rng = numpy_generator(key, why="spectral_partition (its k-means starts)")
    total = A.sum()
    lam, V = np.linalg.eigh(B)
    lam, V = lam[::-1], V[:, ::-1]
    n_pos = int(np.sum(lam > 1e-10 * max(1.0, abs(lam[0]))))
    n = A.shape[0]
    best, best_q = np.zeros(n, int), 0.0
    for g in range(2, min(n_pos + 1, n - 1) + 1):
        X = V[:, : g - 1] * np.sqrt(lam[: g - 1])
        for _ in range(int(n_starts)):
            labels = _kmeans(X, g, rng)
            q = float(np.sum(B * (labels[:, None] == labels[None, :])) / total)
            if q > best_q + 1e-12:
                best, best_q = labels, q
    return _canonical(best), best_q


def _expected_coassignment(runs: list[np.ndarray]) -> float:
    """Chance that two given neurons share a group under random labels with each run's group sizes."""
    n = runs[0].size
    p = [np.sum(np.bincount(r) * (np.bincount(r) - 1)) / (n * (n - 1)) for r in runs]
    return float(np.mean(p))


def _consensus(A: np.ndarray, rng: np.random.Generator, n_runs: int, n_starts: int, max_rounds: int = 10):
    runs = [spectral_partition(A, key=int(rng.integers(2**31 - 1)), n_starts=n_starts)[0] for _ in range(n_runs)]
    first = None
    for _ in range(max_rounds):
        C = np.mean([r[:, None] == r[None, :] for r in runs], axis=0)
        if first is None:
            first = C
        np.fill_diagonal(C, 0.0)
        if np.all((C < 1e-12) | (C > 1 - 1e-12)):  # every run agrees
            break
        Bc = C - _expected_coassignment(runs)
        np.fill_diagonal(Bc, 0.0)
        runs = [spectral_partition(C, B=Bc, key=int(rng.integers(2**31 - 1)), n_starts=n_starts)[0]
                for _ in range(n_runs)]
    consensus = first.copy()
    np.fill_diagonal(consensus, 1.0)
    return _canonical(runs[0]), consensus


def consensus_communities(
    counts: Any,
    *,
    key: Any,
    sigmas: Any = (1.0, 2.0, 5.0, 10.0),
    segment_ids: Any = None,
    n_runs: int = 20,
    n_starts: int = 5,
    n_shuffles: int = 20,
    alpha: float = 0.05,
) -> CommunityResult:
    """Communities of neurons with similar spike trains (Humphries 2011), with their significance.

    Parameters
    ----------
    counts : array_like, shape (time, neuron)
        Spike counts in bins.
    key : jax.random key or int
        k-means starts and the time shifts of the null; the same key gives the same result.
    sigmas : sequence of float, default (1, 2, 5, 10)
        Candidate Gaussian widths in bins; the one with the highest modularity is used.
    segment_ids : array_like, shape (time,), optional
        Trial labels: the smoothing stops at each boundary (the null's shifts are circular over
        the whole recording).
    n_runs : int, default 20
        Spectral k-means runs of the consensus.
    n_starts : int, default 5
        k-means starts per number of groups in each run.
    n_shuffles : int, default 20
        Recordings with each neuron circularly shifted by its own random lag (at least a tenth of
        the recording): their ``Q`` is the null (0 skips the test).
    alpha : float, default 0.05
        Significance level: with ``p_value > alpha`` the result is one community.

    Returns
    -------
    CommunityResult
        A single community (``n_communities == 1``) when the network has no modular structure.

    Raises
    ------
    ValueError
        Bad counts (not 2-D, NaN, fewer than 3 neurons, a silent neuron) or bad options.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.communities import consensus_communities
    >>> rng = np.random.default_rng(0)
    >>> drive = rng.random((3000, 2)) < 0.03
    >>> rate = 0.2 + 4.0 * np.repeat(drive, 6, axis=1)  # two groups of 6 neurons
    >>> res = consensus_communities(rng.poisson(rate), key=0, sigmas=(1.0,), n_shuffles=19)
    >>> res.n_communities, res.labels.tolist(), res.p_value
    (2, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1], 0.05)
    """
    x = _as_counts(counts)
    sig = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
    if sig.size == 0 or np.any(~np.isfinite(sig)) or np.any(sig < 0):
        raise ValueError(f"sigmas must be finite widths in bins >= 0, got {sigmas!r}")
    for name, v, lo in (("n_runs", n_runs, 1), ("n_starts", n_starts, 1), ("n_shuffles", n_shuffles, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    rng = numpy_generator(key, why="consensus_communities (k-means starts and the time-shifted null)")
    # the width: highest modularity of one spectral partition per candidate
    best = None
    for s in sig:
        A = spike_train_similarity(x, sigma=float(s), segment_ids=segment_ids)
        _, q = spectral_partition(A, key=int(rng.integers(2**31 - 1)), n_starts=n_starts)
        if best is None or q > best[1]:
            best = (float(s), q, A)
    sigma, _, A = best
    labels, consensus = _consensus(A, rng, int(n_runs), int(n_starts))
    Q = modularity(A, labels) if labels.max() > 0 else 0.0  # one group: no structure, Q = 0 exactly
    T = x.shape[0]
    null = np.empty(int(n_shuffles))
    for i in range(int(n_shuffles)):
        lags = rng.integers(max(1, T // 10), max(2, T - T // 10), x.shape[1])
        shifted = np.stack([np.roll(x[:, n], lags[n]) for n in range(x.shape[1])], axis=1)
        As = spike_train_similarity(shifted, sigma=sigma, segment_ids=segment_ids)
        null[i] = spectral_partition(As, key=int(rng.integers(2**31 - 1)), n_starts=n_starts)[1]
    if labels.max() == 0:  # nothing to test: one community
        p, significant = 1.0, False
    else:
        p = float((1 + np.sum(null >= Q - 1e-12)) / (1 + null.size)) if null.size else float("nan")
        significant = bool(not null.size or p <= float(alpha))
    final = labels if significant else np.zeros_like(labels)
    return CommunityResult(final, int(final.max()) + 1, labels, Q, consensus, A, sigma, null, p, significant)
