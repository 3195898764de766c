r"""Neural ensembles: groups of neurons whose activity is correlated, by three methods.

:class:`Ensembles` splits a recording's neurons into ensembles by co-activity, as the essay asks
("decomposing X into a set of smaller matrices, each of which has relatively strong correlations
within it"), with one interface for three methods:

- ``"assemblies"``: the Marchenko-Pastur bound and ICA (or PCA) patterns of Lopes-dos-Santos
  et al. (2013) (:mod:`bayesneuro.density.assemblies`). Ensembles may overlap: a neuron can
  belong to several. Streams the correlations, so it scales to long recordings.
- ``"communities"``: consensus modularity communities of smoothed spike trains (Humphries 2011,
  :mod:`bayesneuro.density.communities`), tested against time-shifted neurons; a partition.
- ``"mixture"``: a probabilistic partition (a mixture over neurons of shared Poisson drives,
  :mod:`bayesneuro.density.ensemble_mixture`) fitted through the shared inference layer, with
  each neuron's posterior membership, each pair's co-membership, and the number of ensembles
  chosen on held-out time.

All three give ``n_ensembles_``, ``membership_`` (neuron x ensemble), ``labels_``,
``co_membership_`` and ``activity_`` (each ensemble's activity over time), and
``summary_statistics()`` for :func:`~bayesneuro.density.compare_states` (ensembles in sleep vs
wake); :func:`ensemble_similarity` says how alike two fits' ensembles are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..estimator import Estimator, resolve_key
from .assemblies import (
    CHUNK,
    assembly_activity,
    assembly_members,
    assembly_patterns,
    correlation_matrix,
)
from .communities import consensus_communities
from .ensemble_mixture import (
    _drive_given,
    cross_validate_ensembles,
    fit_ensemble_mixture,
)

__all__ = ["Ensembles", "ensemble_similarity", "plot_ensembles"]

METHODS = ("assemblies", "communities", "mixture")


def _as_counts(data: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, float | None]:
    """``(counts (time, neuron), neuron ids, bin centres or None, segment ids or None, bin size)``."""
    from ..data import SpikeData

    if isinstance(data, SpikeData):
        seg = None if data.trial_ids is None else np.asarray(data.segment_ids)
        return (np.asarray(data.counts), np.asarray(data.neuron_ids), np.asarray(data.bin_centers), seg,
                float(data.bin_size))
    x = np.asarray(data)
    if x.ndim != 2:
        raise ValueError(f"data must be a SpikeData or a (time, neuron) array, got shape {x.shape}")
    return x, np.arange(x.shape[1]), None, None, None


class Ensembles(Estimator):
    """Ensembles of co-active neurons: assemblies, spike-train communities or a probabilistic partition.

    Parameters
    ----------
    method : {"assemblies", "communities", "mixture"}, default "assemblies"
        See the module docstring.
    pattern : {"ica", "pca"}, default "ica"
        ``"assemblies"``: the patterns' method.
    sigmas : sequence of float, default (1, 2, 5, 10)
        ``"communities"``: candidate smoothing widths, bins.
    n_shuffles : int, default 20
        ``"communities"``: time-shifted recordings of the significance test.
    n_ensembles : int or "auto", default "auto"
        ``"mixture"``: the number of ensembles, or chosen among `candidates` on held-out time.
    candidates : sequence of int, default (0, 1, 2, 3, 4)
        ``"mixture"`` with ``n_ensembles="auto"``.
    n_folds : int, default 4
        ``"mixture"``: blocks of bins of the held-out choice.
    chunk_size : int, default 16384
        ``"assemblies"``: bins per chunk of the streamed passes.

    Attributes
    ----------
    n_ensembles_ : int
        Ensembles found (0: none, the neurons are independent at this resolution).
    membership_ : xarray.DataArray, (neuron, ensemble)
        Assemblies: 1 for members (a neuron may be in several); communities: 1 for its community;
        mixture: the posterior probability of each ensemble.
    labels_ : numpy.ndarray of int, (neuron,)
        The most probable (or the heaviest-weighted) ensemble of each neuron, -1 for none.
    co_membership_ : xarray.DataArray, (neuron, neuron_other)
        Probability (0/1 for the first two methods) that two neurons share an ensemble.
    activity_ : xarray.DataArray, (time, ensemble)
        Assemblies: activation strength; communities: the mean z-scored smoothed rate of the
        members; mixture: each ensemble's drive.
    detail_ : NamedTuple
        The method's own result (:class:`~bayesneuro.density.assemblies.AssemblyPatterns`,
        :class:`~bayesneuro.density.communities.CommunityResult` or
        :class:`~bayesneuro.density.ensemble_mixture.EnsembleMixtureFit`).
    cv_ : EnsembleCV or None
        ``"mixture"`` with ``n_ensembles="auto"``: the held-out scores.
    offset_, gain_ : numpy.ndarray, (neuron,)
        Each neuron's read-out of its ensemble (see :meth:`log_likelihood`).

    Examples
    --------
    >>> import numpy as np
    >>> import bayesneuro as bn
    >>> rng = np.random.default_rng(0)
    >>> T = 20_000
    >>> rate = np.full((T, 20), 0.4)
    >>> on = rng.random(T) < 0.05
    >>> rate[np.ix_(on, [2, 5, 7, 11])] += 3.0
    >>> ens = bn.density.Ensembles().fit(rng.poisson(rate), key=0)
    >>> ens.n_ensembles_, np.flatnonzero(ens.labels_ == 0).tolist()
    (1, [2, 5, 7, 11])
    """

    score_unit = "bits/spike"
    log_likelihood_dim = "neuron"

    def __init__(
        self,
        method: str = "assemblies",
        *,
        pattern: str = "ica",
        sigmas: Any = (1.0, 2.0, 5.0, 10.0),
        n_shuffles: int = 20,
        n_ensembles: Any = "auto",
        candidates: Any = (0, 1, 2, 3, 4),
        n_folds: int = 4,
        chunk_size: int = CHUNK,
    ):
        self.method = method
        self.pattern = pattern
        self.sigmas = sigmas
        self.n_shuffles = n_shuffles
        self.n_ensembles = n_ensembles
        self.candidates = candidates
        self.n_folds = n_folds
        self.chunk_size = chunk_size

    def fit(self, data: Any, *, key: Any = None, progress: bool | None = None, **fit_options) -> Ensembles:
        """Find the ensembles of a recording.

        Parameters
        ----------
        data : SpikeData or array_like, shape (time, neuron)
            Spike counts.
        key : jax.random key or int
            Required for every method except ``"assemblies"`` with ``pattern="pca"`` (ICA starts,
            k-means starts and the shifted null, the mixture's starts).
        progress : bool, optional
            Progress bars of the mixture's fits.
        **fit_options
            ``"mixture"``: MAP options of :func:`bayesneuro.infer.fit` (``max_iter``, ``tol``).

        Returns
        -------
        Ensembles
            ``self``, fitted.

        Raises
        ------
        ValueError
            An unknown method, bad counts (NaN, negative, a silent neuron, fewer bins than
            neurons for assemblies).
        """
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        needed = not (self.method == "assemblies" and self.pattern == "pca")
        rng_key = resolve_key(key, needed=needed, why=f"Ensembles(method={self.method!r}).fit")
        x, ids, centres, seg, bin_size = _as_counts(data)
        N = x.shape[1]
        self.neuron_ids_ = ids
        self.cv_ = None
        if self.method == "assemblies":
            stats = correlation_matrix(x, chunk_size=self.chunk_size)
            res = assembly_patterns(x, method=self.pattern, key=rng_key, stats=stats, chunk_size=self.chunk_size)
            K = res.n_assemblies
            members = assembly_members(res)
            mem = np.zeros((N, K))
            for k, m in enumerate(members):
                mem[m, k] = 1.0
            act = assembly_activity(x, res, stats=stats, chunk_size=self.chunk_size)
            weights = res.patterns.T  # (neuron, ensemble)
            labels = np.where(mem.sum(1) > 0, np.argmax(np.where(mem > 0, weights, -np.inf), axis=1), -1) if K else np.full(N, -1)
            co = np.clip(mem @ mem.T, 0, 1)
        elif self.method == "communities":
            res = consensus_communities(x, key=rng_key, sigmas=self.sigmas, segment_ids=seg, n_shuffles=self.n_shuffles)
            K = res.n_communities if res.significant and res.n_communities > 1 else 0
            labels = res.labels if K else np.full(N, -1)
            mem = np.zeros((N, K))
            if K:
                mem[np.arange(N), labels] = 1.0
            co = (labels[:, None] == labels[None, :]).astype(float) * (labels[:, None] >= 0)
            act = self._community_activity(x, labels, K, res.sigma, seg)
        else:
            if self.n_ensembles == "auto":
                self.cv_ = cross_validate_ensembles(x, self.candidates, key=rng_key, n_folds=self.n_folds, **fit_options)
                K = self.cv_.best
            else:
                K = int(self.n_ensembles)
            res = fit_ensemble_mixture(x, K, key=rng_key, progress=progress, **fit_options)
            mem = res.membership
            labels = mem.argmax(1) if K else np.full(N, -1)
            co = res.co_membership if K else np.eye(N)
            act = res.factors.T
        np.fill_diagonal(co, 1.0)
        ens = np.arange(K)
        time = centres if centres is not None else np.arange(x.shape[0])
        self.detail_ = res
        self.n_ensembles_ = int(K)
        self.labels_ = np.asarray(labels, dtype=int)
        self.membership_ = xr.DataArray(mem, dims=("neuron", "ensemble"), coords={"neuron": ids, "ensemble": ens},
                                        name="membership")
        self.co_membership_ = xr.DataArray(co, dims=("neuron", "neuron_other"),
                                           coords={"neuron": ids, "neuron_other": ids}, name="co_membership")
        self.activity_ = xr.DataArray(np.asarray(act, dtype=float), dims=("time", "ensemble"),
                                      coords={"time": time, "ensemble": ens}, name="activity")
        self.bin_size_ = bin_size
        # each neuron's read-out of its ensemble (the score's predictive model): offset and gain
        # on the mean standardised activity of the ensemble's other members
        xf = np.asarray(x, dtype=float)
        self._mean, self._std = xf.mean(0), np.maximum(xf.std(0), 1e-12)
        self.offset_, self.gain_ = self._readout(xf)
        self._train_ll = self._neuron_log_likelihood(xf)
        return self

    def _others_activity(self, x: np.ndarray) -> np.ndarray:
        """``(time, neuron)``: for each neuron, the mean z-scored counts of the other members of
        its ensemble (z-scores with the training mean and SD; zeros for a neuron in no ensemble
        or alone in it)."""
        z = (x - self._mean) / self._std
        out = np.zeros_like(z)
        for k in range(self.n_ensembles_):
            m = np.flatnonzero(self.labels_ == k)
            if m.size < 2:
                continue
            total = z[:, m].sum(axis=1, keepdims=True)
            out[:, m] = (total - z[:, m]) / (m.size - 1)
        return out

    def _readout(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from .ensemble_mixture import _newton_poisson_1d

        g = self._others_activity(x)
        N = x.shape[1]
        b, w = np.log(np.maximum(x.mean(0), 1e-12)), np.zeros(N)
        for n in range(N):
            if np.any(g[:, n] != 0):
                b[n], w[n], _ = _newton_poisson_1d(x[:, n], g[:, n], float(np.log(max(x[:, n].mean(), 1e-12))))
        return b, w

    def _neuron_log_likelihood(self, x: np.ndarray, gain: np.ndarray | None = None) -> np.ndarray:
        from scipy.special import gammaln

        w = self.gain_ if gain is None else gain
        eta = self.offset_[None] + w[None] * self._others_activity(x)
        return np.sum(x * eta - np.exp(eta) - gammaln(x + 1.0), axis=0)

    def _counts_of(self, data: Any) -> np.ndarray:
        x, ids, *_ = _as_counts(data)
        if len(ids) != len(self.neuron_ids_) or not np.array_equal(ids, self.neuron_ids_):
            raise ValueError(f"data have neurons {list(ids)[:10]}..., the fit {list(self.neuron_ids_)[:10]}...")
        x = np.asarray(x, dtype=float)
        if not np.all(np.isfinite(x)) or np.any(x < 0) or np.any(x != np.round(x)):
            raise ValueError("data must hold finite non-negative integer counts")
        return x

    def log_likelihood(self, data: Any) -> np.ndarray:
        """Log-likelihood (nats) of each neuron's counts in `data`, predicted from the other
        members of its ensemble, shape (neuron,).

        Each neuron fires as ``Poisson(exp(offset_n + gain_n g_n(t)))`` with ``g_n(t)`` the mean
        z-scored counts (training mean and SD) of the other members of its ensemble in the same
        bin; ``offset_`` and ``gain_`` were fitted on the training data (a neuron in no ensemble
        has gain 0: an independent Poisson neuron). On held-out data this says how much the
        ensembles predict, whatever method found them.
        """
        self._check_fitted()
        return self._neuron_log_likelihood(self._counts_of(data))

    def score(self, data: Any) -> float:
        """Gain in bits/spike of predicting each neuron from the other members of its ensemble,
        over independent neurons (the same offsets, gains 0), on `data` (held out for an honest
        score); 0 when no ensemble predicts anything."""
        self._check_fitted()
        x = self._counts_of(data)
        gain = self._neuron_log_likelihood(x) - self._neuron_log_likelihood(x, np.zeros_like(self.gain_))
        return float(gain.sum() / max(x.sum(), 1.0) / np.log(2.0))

    def to_inference_data(self):
        """The fit as ArviZ InferenceData: a point fit (``point_estimate``: ``membership``
        (neuron, ensemble), ``offset`` and ``gain`` (neuron)), and ``log_likelihood``: ``counts``
        (neuron), :meth:`log_likelihood` of the training data."""
        from ..infer.convert import point_inference_data

        self._check_fitted()
        ids = np.asarray(self.neuron_ids_)
        return point_inference_data(
            {"membership": (("neuron", "ensemble"), np.asarray(self.membership_)),
             "offset": (("neuron",), np.asarray(self.offset_)),
             "gain": (("neuron",), np.asarray(self.gain_))},
            method=self.method, coords={"neuron": ids, "ensemble": np.arange(self.n_ensembles_)},
            attrs={"n_ensembles": int(self.n_ensembles_)},
            log_likelihood={"counts": (("neuron",), np.asarray(self._train_ll))},
            log_likelihood_coords={"neuron": ids},
        )

    @staticmethod
    def _community_activity(x: np.ndarray, labels: np.ndarray, K: int, sigma: float, seg) -> np.ndarray:
        from .communities import smooth_within_segments

        x = np.asarray(x, dtype=float)
        z = smooth_within_segments((x - x.mean(0)) / np.maximum(x.std(0), 1e-12), sigma, seg)
        return np.stack([z[:, labels == k].mean(1) for k in range(K)], axis=1) if K else np.zeros((len(x), 0))

    def transform(self, data: Any) -> xr.DataArray:
        """Each ensemble's activity in another recording of the same neurons, (time, ensemble).

        Assemblies: activation strength with the new recording z-scored on its own (as for
        sleep after a task); communities: the members' mean z-scored smoothed rate; mixture:
        each ensemble's drive in each bin, estimated from its most probable members.
        """
        self._check_fitted()
        x, ids, centres, seg, _ = _as_counts(data)
        if len(ids) != len(self.neuron_ids_) or not np.array_equal(ids, self.neuron_ids_):
            raise ValueError(f"data have neurons {list(ids)[:10]}..., the fit {list(self.neuron_ids_)[:10]}...")
        K = self.n_ensembles_
        if self.method == "assemblies":
            act = assembly_activity(x, self.detail_, chunk_size=self.chunk_size) if K else np.zeros((len(x), 0))
        elif self.method == "communities":
            act = self._community_activity(x, self.labels_, K, self.detail_.sigma, seg)
        else:
            d = self.detail_
            spread = np.maximum(np.mean(d.factors**2, axis=1), 1e-8) if K else np.zeros(0)
            act = _drive_given(np.asarray(x, float), d.offset, d.loadings, self.labels_, K, spread).T if K else np.zeros((len(x), 0))
        time = centres if centres is not None else np.arange(x.shape[0])
        return xr.DataArray(act, dims=("time", "ensemble"), coords={"time": time, "ensemble": np.arange(K)},
                            name="activity")

    def summary_statistics(self) -> dict:
        """What :func:`~bayesneuro.density.compare_states` compares between states.

        Returns
        -------
        dict
            ``n_ensembles``; ``fraction_in_ensembles`` (neurons in at least one); ``mean_size``
            (neurons per ensemble, NaN without ensembles); ``co_membership`` (the mean
            co-membership of all pairs: how much of the population moves together).
        """
        self._check_fitted()
        N = len(self.neuron_ids_)
        m = np.asarray(self.membership_)
        in_any = (m.max(axis=1) > 0.5) if self.n_ensembles_ else np.zeros(N, bool)
        co = np.asarray(self.co_membership_)
        off = co[~np.eye(N, dtype=bool)]
        sizes = (m > 0.5).sum(axis=0) if self.n_ensembles_ else np.zeros(0)
        return {"n_ensembles": np.asarray(float(self.n_ensembles_)),
                "fraction_in_ensembles": np.asarray(float(in_any.mean())),
                "mean_size": np.asarray(float(sizes.mean()) if sizes.size else np.nan),
                "co_membership": np.asarray(float(off.mean()))}


def ensemble_similarity(a: Ensembles, b: Ensembles) -> dict:
    """How alike the ensembles of two fits of the same neurons are (e.g. wake and sleep).

    Returns
    -------
    dict
        ``adjusted_rand``: agreement of the two ``labels_`` partitions (1 identical, about 0 by
        chance; neurons in no ensemble form their own group); ``pattern_similarity``: for each
        ensemble of ``a``, the largest absolute cosine between its membership column and those of
        ``b`` (NaN where ``b`` has none).
    """
    for e in (a, b):
        e._check_fitted()
    if not np.array_equal(a.neuron_ids_, b.neuron_ids_):
        raise ValueError("the two fits are of different neurons")
    from sklearn.metrics import adjusted_rand_score

    ari = float(adjusted_rand_score(a.labels_, b.labels_))
    A = np.asarray(a.detail_.patterns.T if a.method == "assemblies" else a.membership_)
    B = np.asarray(b.detail_.patterns.T if b.method == "assemblies" else b.membership_)
    if A.shape[1] == 0:
        sim = np.zeros(0)
    elif B.shape[1] == 0:
        sim = np.full(A.shape[1], np.nan)
    else:
        An = A / np.linalg.norm(A, axis=0, keepdims=True)
        Bn = B / np.linalg.norm(B, axis=0, keepdims=True)
        sim = np.abs(An.T @ Bn).max(axis=1)
    return {"adjusted_rand": ari, "pattern_similarity": sim}


def plot_ensembles(ens: Ensembles, data: Any, *, axes: Any = None, max_time: int | None = 2000):
    """The correlation matrix with neurons sorted by ensemble (blocks outlined), and each
    ensemble's activity over time.

    Parameters
    ----------
    ens : Ensembles
        Fitted.
    data : SpikeData or array_like
        The recording (its correlations are shown).
    axes : sequence of two matplotlib Axes, optional
    max_time : int, optional
        Bins of activity shown (the first ones).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    ens._check_fitted()
    x, *_ = _as_counts(data)
    C = correlation_matrix(x).corr
    order = np.argsort(np.where(ens.labels_ < 0, ens.n_ensembles_, ens.labels_), kind="stable")
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 1.6]})
    else:
        fig = axes[0].figure
    ax = axes[0]
    Cs = C[np.ix_(order, order)].copy()
    np.fill_diagonal(Cs, np.nan)
    lim = np.nanmax(np.abs(Cs)) if np.isfinite(Cs).any() else 1.0
    im = ax.imshow(Cs, cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.colorbar(im, ax=ax, label="correlation")
    sorted_labels = ens.labels_[order]
    for k in range(ens.n_ensembles_):
        idx = np.flatnonzero(sorted_labels == k)
        if idx.size:
            ax.add_patch(Rectangle((idx[0] - 0.5, idx[0] - 0.5), idx.size, idx.size, fill=False, lw=1.5, ec="k"))
    ax.set_xlabel("neuron (sorted by ensemble)")
    ax.set_ylabel("neuron (sorted by ensemble)")
    ax.set_title(f"{ens.method}: {ens.n_ensembles_} ensemble(s)")
    ax = axes[1]
    act = ens.activity_
    n = act.sizes["time"] if max_time is None else min(max_time, act.sizes["time"])
    for k in range(ens.n_ensembles_):
        ax.plot(act["time"].values[:n], act.values[:n, k] + 0 * k, lw=0.8, label=f"ensemble {k}")
    ax.set_xlabel("time (s)" if ens.bin_size_ is not None else "bin")
    ax.set_ylabel("activity")
    if ens.n_ensembles_:
        ax.legend(loc="upper right", fontsize="small")
    return fig
