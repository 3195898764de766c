r"""Neuron types: a Bayesian mixture of diagonal Gaussians on standardised per-neuron features.

Each neuron :math:`n` has a feature vector :math:`x_n` (log rate, CV, Lv, log Fano factor,
burst index, ...). Features are optionally log-transformed, then standardised (centred and
divided by their SD across neurons), giving :math:`z_n`. The model is

.. math::
    w \sim \mathrm{Dirichlet}(\alpha \mathbf 1_K),\quad
    m_{kd} \sim N(0, 2^2),\quad
    s_{kd} \sim \mathrm{LogNormal}(\log 0.5, 1),\quad
    p(z_n) = \sum_{k=1}^K w_k \prod_d N(z_{nd} \mid m_{kd}, s_{kd}^2),

with the type assignment of each neuron marginalised (``numpyro`` ``MixtureSameFamily``), so
every parameter is continuous and MAP, Laplace and NUTS all apply. The posterior probability
that neuron :math:`n` is of type :math:`k` is Bayes' rule,
:math:`r_{nk} \propto w_k \prod_d N(z_{nd} \mid m_{kd}, s_{kd}^2)`, averaged over posterior draws.

Choosing the number of types
    ``selection="loo"`` (default) fits every :math:`K = 1, \dots,` ``max_types`` and compares
    them by PSIS-LOO of each neuron's feature vector (``az.compare``). The chosen :math:`K` is the
    smallest whose elpd lies within ``parsimony`` standard errors (of the elpd difference) of the
    best one: a one-SE rule that keeps one broad cluster from being split for a negligible gain.
    With few neurons PSIS-LOO is often unreliable (a neuron whose Pareto :math:`\hat k` exceeds
    0.7 weighs too much on its own fit; more effective parameters than neurons): ``fit`` then
    warns and chooses :math:`K` by K-fold cross-validation over neurons with the same rule.
    A choice equal to ``max_types`` warns (the best :math:`K` may be larger).
    ``selection="sparse"`` fits only ``K = max_types`` under a sparse Dirichlet prior
    (:math:`\alpha` = ``prior_concentration``, default :math:`1/K`), which lets superfluous types
    take small weight; ``n_types_`` then counts the types that are the most likely type of at
    least one neuron. The sparse prior acts on the full posterior (it is strongest with
    ``method="nuts"``); the Laplace approximation, centred at a mode of the unconstrained
    density, sees only a weak pull towards empty types.

Mixtures have many local optima, so each :math:`K` is fitted from ``n_restarts`` k-means++
starts drawn from the key (a few Lloyd iterations each). Every start is optimised (the mode of
the Laplace objective) and the best one seeds the final fit with ``method`` ("laplace" or
"nuts"). Types are then ordered by decreasing posterior mean weight.

Label switching. Permuting the types leaves the likelihood unchanged, so NUTS chains may swap
labels. Each NUTS draw is relabelled by the permutation that best matches its type means to
those of the best mode (Hungarian assignment on squared distances, :func:`relabel_draws`)
before anything is summarised. Laplace draws come from one mode and need no relabelling.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import xarray as xr
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer import init_to_value

from .._shapes import bucket_length, pad_axis, unpad_result
from .._validation import _warn_if_on_edge
from ..estimator import Estimator, resolve_key
from ..infer import fit as _infer_fit
from ..infer.fit import progress_default

__all__ = [
    "MixtureParams",
    "NeuronTypes",
    "membership_probabilities",
    "mixture_log_likelihood",
    "mixture_model",
    "plot_types",
    "relabel_draws",
]

MEAN_SCALE = 2.0
SCALE_PRIOR = (float(np.log(0.5)), 1.0)
PARETO_K_MAX = 0.7  # PSIS-LOO is unreliable for a point whose Pareto k exceeds this (Vehtari et al. 2017)


class MixtureParams(NamedTuple):
    """Parameters of a diagonal Gaussian mixture.

    Attributes
    ----------
    weights : array, shape (type,)
        Mixing weights (sum to one).
    means : array, shape (type, feature)
        Type means.
    scales : array, shape (type, feature)
        Type standard deviations.
    """

    weights: Any
    means: Any
    scales: Any


def _component_log_density(x, params: MixtureParams) -> jax.Array:
    """``log w_k + log N(x_n | m_k, diag s_k^2)``, shape (neuron, type)."""
    x = jnp.asarray(x)
    lp = dist.Normal(params.means[None], params.scales[None]).log_prob(x[:, None, :]).sum(-1)
    return jnp.log(params.weights)[None] + lp


def mixture_log_likelihood(x: Any, params: MixtureParams) -> jax.Array:
    """Log density of each row of `x` under the mixture, shape (neuron,).

    Examples
    --------
    >>> import numpy as np
    >>> p = MixtureParams(np.array([1.0]), np.zeros((1, 1)), np.ones((1, 1)))
    >>> round(float(mixture_log_likelihood(np.zeros((1, 1)), p)[0]), 4)  # log N(0 | 0, 1)
    -0.9189
    """
    return logsumexp(_component_log_density(x, params), axis=-1)


def membership_probabilities(x: Any, params: MixtureParams) -> jax.Array:
    """Posterior type probabilities of each row of `x` given `params` (Bayes' rule), (neuron, type).

    Examples
    --------
    >>> import numpy as np
    >>> p = MixtureParams(np.array([0.5, 0.5]), np.array([[-3.0], [3.0]]), np.ones((2, 1)))
    >>> membership_probabilities(np.array([[-3.0], [3.0]]), p).round(3).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    lp = _component_log_density(x, params)
    return jnp.exp(lp - logsumexp(lp, axis=-1, keepdims=True))


def _draws_log_density(z, w, m, s) -> np.ndarray:
    """Numpy :func:`_component_log_density` for every posterior draw at once, (draw, neuron, type).

    ``z`` (neuron, feature); ``w`` (draw, type); ``m``, ``s`` (draw, type, feature). Numpy, not
    an eager ``jax.vmap``: these small summaries would otherwise compile a program per operation
    and per number of types.
    """
    z, w, m, s = (np.asarray(a, np.float64) for a in (z, w, m, s))
    r = (z[None, :, None, :] - m[:, None]) / s[:, None]
    lp = -0.5 * r**2 - np.log(s[:, None]) - 0.5 * np.log(2 * np.pi)
    with np.errstate(divide="ignore"):
        return np.log(w)[:, None, :] + lp.sum(-1)


def _draws_log_likelihood(z, w, m, s) -> np.ndarray:
    """:func:`mixture_log_likelihood` per draw, (draw, neuron)."""
    from scipy.special import logsumexp as np_logsumexp

    return np_logsumexp(_draws_log_density(z, w, m, s), axis=-1)


def _draws_log_predictive(z, w, m, s) -> np.ndarray:
    """Log of the posterior-mean density of each row, (neuron,)."""
    from scipy.special import logsumexp as np_logsumexp

    lp = _draws_log_likelihood(z, w, m, s)
    return np_logsumexp(lp, axis=0) - np.log(lp.shape[0])


def _draws_membership(z, w, m, s) -> np.ndarray:
    """:func:`membership_probabilities` averaged over the draws, (neuron, type)."""
    from scipy.special import logsumexp as np_logsumexp

    lp = _draws_log_density(z, w, m, s)
    return np.exp(lp - np_logsumexp(lp, axis=-1, keepdims=True)).mean(0)


class _FeatureRows(dist.Distribution):
    """Density of row ``i`` of a fixed (neuron, feature) matrix under a mixture, as a site over ``i``.

    It lets one observed site carry one pointwise log-likelihood per neuron: the observed value is
    the row index (``0 .. n - 1``) and its log-probability is the mixture density of that row.
    """

    support = constraints.nonnegative_integer

    def __init__(self, mixture: dist.Distribution, rows: Any):
        self.mixture, self.rows = mixture, jnp.asarray(rows)
        super().__init__(batch_shape=(self.rows.shape[0],))

    def log_prob(self, value):
        return self.mixture.log_prob(self.rows[value])

    def sample(self, key, sample_shape=()):
        raise NotImplementedError("draw new features by calling mixture_model with z=None")


def mixture_model(
    n_neuron: int,
    n_feature: int,
    n_types: int,
    concentration: float = 1.0,
    mean_scale: float = MEAN_SCALE,
    scale_prior: tuple = SCALE_PRIOR,
    active: Any = None,
    z: Any = None,
    mask: Any = None,
) -> None:
    """NumPyro model: diagonal Gaussian mixture with marginalised type assignments.

    Parameters
    ----------
    n_neuron, n_feature : int
    n_types : int
        Number of mixture components (the padded size when `active` masks some out).
    concentration : float
        Dirichlet concentration :math:`\\alpha` of the weights.
    mean_scale : float
        Prior SD of the type means (standardised units).
    scale_prior : (float, float)
        LogNormal ``(loc, scale)`` prior of the type SDs.
    active : bool array, shape (type,), optional
        Components in use (default all). The weights are ``raw_weights`` (Dirichlet over all
        ``n_types``) renormalised over the active ones, which by the aggregation property of
        the Dirichlet are ``Dirichlet(alpha)`` over the active types, so a padded model is the
        smaller mixture plus inactive parameters that follow their prior. One compiled program
        then serves every number of types.
    z : array, shape (neuron, feature), optional
        Standardised features. When absent, the site ``features`` draws them from the mixture.
        When given, the observed site ``features`` holds the row index of each neuron and its
        log-probability is the mixture density of that neuron's feature vector, so that the
        pointwise log-likelihood (for LOO) has one value per neuron; the features themselves
        are the data argument ``z`` (``constant_data`` in ArviZ).
    mask : bool array, shape (neuron,), optional
        Neurons in the likelihood (default all): :class:`NeuronTypes` pads the neurons to a
        bucket count (:func:`bayesneuro._shapes.bucket_length`) and masks the padding out, so
        another number of neurons in the same bucket reuses the compiled programs.

    Notes
    -----
    Sites: ``raw_weights`` (latent, absent when ``n_types == 1``), ``weights`` (deterministic,
    0 on inactive types), ``means`` and ``scales`` (latent, ``(type, feature)``), ``features``.

    Examples
    --------
    >>> import jax
    >>> from numpyro.infer import Predictive
    >>> Predictive(mixture_model, num_samples=2)(jax.random.key(0), 5, 3, 2)["features"].shape
    (2, 5, 3)
    """
    active = jnp.ones(n_types, dtype=bool) if active is None else jnp.asarray(active, dtype=bool)
    if n_types == 1:
        logits = jnp.zeros(1)
    else:
        raw = numpyro.sample("raw_weights", dist.Dirichlet(jnp.full(n_types, float(concentration))))
        logits = jnp.where(active, jnp.log(raw), -1e30)  # finite: validated logits
    numpyro.deterministic("weights", jax.nn.softmax(logits))
    with numpyro.plate("feature", n_feature, dim=-1), numpyro.plate("type", n_types, dim=-2):
        means = numpyro.sample("means", dist.Normal(0.0, mean_scale))
        scales = numpyro.sample("scales", dist.LogNormal(scale_prior[0], scale_prior[1]))
    mix = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(means, scales).to_event(1))
    in_fit = numpyro.handlers.mask(mask=True if mask is None else jnp.asarray(mask, bool))
    with numpyro.plate("neuron", n_neuron, dim=-1), in_fit:
        if z is None:
            numpyro.sample("features", mix)
        else:
            numpyro.sample("features", _FeatureRows(mix, z), obs=jnp.arange(n_neuron))


def relabel_draws(means: Any, reference: Any) -> np.ndarray:
    """Permutation of the types of each draw that best matches `reference` (label switching).

    Parameters
    ----------
    means : array, shape (draw, type, feature)
        Type means of each draw.
    reference : array, shape (type, feature)
        Reference type means (e.g. the best mode).

    Returns
    -------
    ndarray of int, shape (draw, type)
        ``perm[i, k]``: the type of draw ``i`` that becomes type ``k``; apply it with
        ``np.take_along_axis``.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([[0.0], [5.0]])
    >>> relabel_draws(np.array([[[5.1], [0.2]], [[0.1], [4.9]]]), ref).tolist()
    [[1, 0], [0, 1]]
    """
    from scipy.optimize import linear_sum_assignment

    means = np.asarray(means)
    reference = np.asarray(reference)
    cost = ((reference[None, :, None, :] - means[:, None, :, :]) ** 2).sum(-1)  # (draw, ref k, draw j)
    perm = np.empty(means.shape[:2], dtype=np.int64)
    for i in range(means.shape[0]):
        rows, cols = linear_sum_assignment(cost[i])
        perm[i, rows] = cols
    return perm


# ------------------------------------------------------------------------------------ input


class _Features(NamedTuple):
    values: np.ndarray  # (neuron, feature), as given
    names: np.ndarray
    neuron_ids: np.ndarray


def _as_features(data: Any, features: Sequence[str] | None, feature_names: Any, neuron_ids: Any) -> _Features:
    import pandas as pd

    ids, names = None, None
    if isinstance(data, xr.Dataset):
        keep = list(features) if features is not None else [v for v in data.data_vars if data[v].dims == ("neuron",)]
        missing = [f for f in keep if f not in data.data_vars]
        if missing:
            raise ValueError(f"features {missing} are not in the Dataset (it has {list(data.data_vars)})")
        for f in keep:
            if data[f].dims != ("neuron",):
                raise ValueError(f"feature {f!r} must have dims ('neuron',), got {data[f].dims}")
        if not keep:
            raise ValueError("the Dataset has no variables with dims ('neuron',) to use as features")
        values = np.stack([np.asarray(data[f].values, dtype=np.float64) for f in keep], axis=1)
        names = np.asarray(keep)
        if "neuron" in data.coords:
            ids = np.asarray(data["neuron"].values)
    elif isinstance(data, pd.DataFrame):
        keep = list(features) if features is not None else [
            c for c in data.columns if pd.api.types.is_numeric_dtype(data[c])]
        missing = [f for f in keep if f not in data.columns]
        if missing:
            raise ValueError(f"features {missing} are not columns of the DataFrame")
        values = data[keep].to_numpy(dtype=np.float64)
        names, ids = np.asarray(keep, dtype=object).astype(str), np.asarray(data.index)
    elif isinstance(data, xr.DataArray):
        if data.ndim != 2 or "neuron" not in data.dims:
            raise ValueError(f"a feature DataArray must be 2-D with a 'neuron' dim, got dims {data.dims}")
        other = [d for d in data.dims if d != "neuron"][0]
        data = data.transpose("neuron", other)
        values = np.asarray(data.values, dtype=np.float64)
        names = np.asarray(data[other].values) if other in data.coords else None
        ids = np.asarray(data["neuron"].values) if "neuron" in data.coords else None
        if features is not None:
            if names is None:
                raise ValueError("features= needs feature coordinates on the DataArray")
            sel = [int(np.flatnonzero(names == f)[0]) for f in features]
            values, names = values[:, sel], names[sel]
    else:
        values = np.asarray(data, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(f"features must be a (neuron, feature) array, got shape {values.shape}")
    if feature_names is not None:
        names = np.asarray(feature_names)
    if neuron_ids is not None:
        ids = np.asarray(neuron_ids)
    n, d = values.shape
    names = np.array([f"feature_{j}" for j in range(d)]) if names is None else names
    ids = np.arange(n) if ids is None else ids
    if names.shape != (d,):
        raise ValueError(f"feature_names must have {d} entries, got {names.shape[0]}")
    if ids.shape != (n,):
        raise ValueError(f"neuron_ids must have {n} entries, got {ids.shape[0]}")
    if d < 1:
        raise ValueError("there are no features")
    if n < 3:
        raise ValueError(f"neuron types need at least 3 neurons, got {n}")
    bad = ~np.isfinite(values)
    if bad.any():
        cols = names[bad.any(0)].tolist()
        rows = ids[bad.any(1)].tolist()
        raise ValueError(f"features {cols} contain NaN or infinite values (neurons {rows[:10]}); "
                         "drop or impute those neurons first")
    return _Features(values, names, ids)


def _kmeanspp_start(z: np.ndarray, n_types: int, rng: np.random.Generator, n_lloyd: int = 10) -> dict:
    """k-means++ seeding plus a few Lloyd steps, turned into mixture starting values."""
    n = z.shape[0]
    centres = [z[rng.integers(n)]]
    for _ in range(1, n_types):
        d2 = np.min(((z[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(z[rng.choice(n, p=p)])
    c = np.asarray(centres)
    for _ in range(n_lloyd):
        lab = np.argmin(((z[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        for k in range(n_types):
            if np.any(lab == k):
                c[k] = z[lab == k].mean(0)
    lab = np.argmin(((z[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(lab, minlength=n_types)
    scales = np.full_like(c, 0.5)
    for k in range(n_types):
        if counts[k] >= 2:
            scales[k] = np.clip(z[lab == k].std(0), 0.05, 2.0)
    return {"means": c, "scales": scales, "weights": (counts + 1.0) / (n + n_types)}


def _padded_start(start: dict, n_pad: int, rng: np.random.Generator) -> dict:
    """Pad a K-type start to `n_pad` types (inactive: prior-median scales, small raw weight)."""
    k, d = start["means"].shape
    means = np.concatenate([start["means"], rng.normal(0.0, 1.0, (n_pad - k, d))])
    scales = np.concatenate([start["scales"], np.full((n_pad - k, d), np.exp(SCALE_PRIOR[0]))])
    out = {"means": means, "scales": scales}
    if n_pad > 1:
        raw = np.concatenate([start["weights"], np.full(n_pad - k, 1.0 / n_pad)])
        out["raw_weights"] = raw / raw.sum()
    return out


def _tidy_draws(res, n_types: int, reference: np.ndarray) -> xr.Dataset:
    """Active-type draws ``(chain, draw, type, ...)``: NUTS relabelled, types by decreasing weight."""
    s = {k: np.asarray(res.samples[k])[:, :, :n_types] for k in ("weights", "means", "scales")}
    c, dr = s["means"].shape[:2]
    flat = {k: v.reshape((c * dr,) + v.shape[2:]) for k, v in s.items()}
    flat["weights"] = flat["weights"] / flat["weights"].sum(1, keepdims=True)
    if res.method == "nuts" and n_types > 1:
        perm = relabel_draws(flat["means"], reference)
        for name in ("weights", "means", "scales"):
            p = perm if flat[name].ndim == 2 else perm[:, :, None]
            flat[name] = np.take_along_axis(flat[name], p, axis=1)
    order = np.argsort(-flat["weights"].mean(0), kind="stable")
    out = {k: v[:, order].reshape((c, dr) + v.shape[1:]) for k, v in flat.items()}
    feature = res.coords["feature"]
    return xr.Dataset(
        {"weights": (("chain", "draw", "type"), out["weights"]),
         "means": (("chain", "draw", "type", "feature"), out["means"]),
         "scales": (("chain", "draw", "type", "feature"), out["scales"])},
        coords={"chain": np.arange(c), "draw": np.arange(dr), "type": np.arange(n_types), "feature": feature},
    )


# ------------------------------------------------------------------------------------ estimator


class NeuronTypes(Estimator):
    """Cluster neurons into types with a Bayesian Gaussian mixture on their features.

    Parameters
    ----------
    max_types : int
        Largest number of types considered (capped at the number of neurons).
    prior_concentration : float, optional
        Dirichlet concentration of the weights; default 1 (``"loo"``) or ``1 / max_types``
        (``"sparse"``).
    selection : {"loo", "sparse"}
        How the number of types is chosen (module docstring).
    parsimony : float
        One-SE rule of ``"loo"``: the smallest K within this many SEs of the best elpd.
    log_features : sequence of str or "all"
        Features to log-transform before standardising (they must be > 0). Type means are
        reported back in the original units (the exponential of the type's mean log value, a
        geometric mean).
    features : sequence of str, optional
        Which variables/columns to use from a Dataset or DataFrame (default: all numeric
        per-neuron ones).

    Attributes
    ----------
    n_types_ : int
    labels_ : ndarray of int, shape (neuron,)
        Most probable type of each neuron.
    membership_ : xarray.DataArray, (neuron, type)
        Posterior membership probabilities, averaged over draws.
    weights_ : xarray.DataArray, (type,)
        Posterior mean weights (types ordered by decreasing weight).
    type_means_ : xarray.DataArray, (type, feature)
        Posterior mean type means in original feature units.
    loo_table_ : pandas.DataFrame or None
        ``az.compare`` table over K (``"loo"``), index ``K=1``, ``K=2``, ...
    selection_ : str
        How K was chosen: ``"loo"``, ``"kfold"`` (LOO was unreliable, see ``fit``) or ``"sparse"``.
    cv_table_ : pandas.DataFrame or None
        With ``selection_ == "kfold"``: held-out ``elpd_kfold``, ``se``, ``elpd_diff`` and ``dse``
        per K, best first.
    fits_ : dict of int to FitResult
        The fit for each K tried.
    result_ : FitResult
        The fit of the chosen K.
    feature_names_, neuron_ids_ : ndarray
    center_, scale_ : ndarray, (feature,)
        Standardisation (of the log-transformed features where asked).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 0.3, (20, 2)), rng.normal(3, 0.3, (20, 2))])
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:  # 40 neurons: PSIS-LOO is unreliable
    ...     warnings.simplefilter("always")
    ...     nt = NeuronTypes(max_types=3).fit(x, key=0, n_restarts=2, progress=False)
    >>> nt.selection_, "Pareto k" in str(caught[0].message)  # so K was chosen by K-fold CV instead
    ('kfold', True)
    >>> nt.n_types_, sorted(np.bincount(nt.labels_).tolist())
    (2, [20, 20])
    """

    score_unit = "nats/neuron"
    log_likelihood_dim = "neuron"

    def __init__(self, max_types: int = 6, *, prior_concentration: float | None = None,
                 selection: str = "loo", parsimony: float = 1.0, log_features: Any = (),
                 features: Sequence[str] | None = None):
        if int(max_types) != max_types or max_types < 1:
            raise ValueError(f"max_types must be an integer >= 1, got {max_types}")
        if selection not in ("loo", "sparse"):
            raise ValueError(f"selection must be 'loo' or 'sparse', got {selection!r}")
        if prior_concentration is not None and not prior_concentration > 0:
            raise ValueError(f"prior_concentration must be > 0, got {prior_concentration}")
        self.max_types = max_types
        self.prior_concentration = prior_concentration
        self.selection = selection
        self.parsimony = parsimony
        self.log_features = log_features
        self.features = features

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, data: Any, *, method: str = "laplace", key: Any = None, progress: bool | None = None,
            n_restarts: int = 5, feature_names: Any = None, neuron_ids: Any = None, cv_folds: int = 5,
            **infer_options) -> NeuronTypes:
        """Fit the mixture for each K and choose the number of types.

        Parameters
        ----------
        data : array (neuron, feature), xarray.Dataset, xarray.DataArray or pandas.DataFrame
            Per-neuron features (e.g. ``NeuronStatistics().fit(...).estimates_``).
        method : {"laplace", "nuts"}
            Posterior around the best mode of each K.
        key : jax.random key or int
            Required (k-means++ restarts and posterior draws).
        progress : bool, optional
        n_restarts : int
            k-means++ starts per K (one for K = 1).
        feature_names, neuron_ids : array_like, optional
            Labels, overriding those of the data.
        cv_folds : int
            Folds of the cross-validation over neurons that replaces PSIS-LOO when LOO is
            unreliable (``"loo"`` selection).
        **infer_options
            Options of the final fit's method (e.g. ``num_samples``, ``num_warmup``).

        Returns
        -------
        NeuronTypes
            self, fitted.

        Raises
        ------
        ValueError
            NaN/infinite features, fewer than 3 neurons, a constant feature, or a
            non-positive value in a log-transformed feature.

        Warns
        -----
        UserWarning
            PSIS-LOO is unreliable (a neuron with Pareto k > 0.7 in some K's fit, or more
            effective parameters than neurons): K is then chosen by ``cv_folds``-fold
            cross-validation over neurons (``selection_ = "kfold"``, table ``cv_table_``).
            Also when the chosen K is ``max_types`` (raise it).
        """
        from .._progress import progress_bar

        if method not in ("laplace", "nuts"):
            raise ValueError(f"method must be 'laplace' or 'nuts', got {method!r}")
        if isinstance(n_restarts, bool) or int(n_restarts) != n_restarts or n_restarts < 1:
            raise ValueError(f"n_restarts must be an integer >= 1, got {n_restarts}")
        n_restarts = int(n_restarts)
        feats = _as_features(data, self.features, feature_names, neuron_ids)
        x = feats.values.copy()
        log_mask = self._log_mask(feats.names)
        for j in np.flatnonzero(log_mask):
            if np.any(x[:, j] <= 0):
                raise ValueError(f"feature {feats.names[j]!r} is log-transformed but has values <= 0")
            x[:, j] = np.log(x[:, j])
        center, scale = x.mean(0), x.std(0)
        const = scale <= 1e-12 * np.maximum(1.0, np.abs(center))
        if const.any():
            raise ValueError(f"features {feats.names[const].tolist()} are constant across neurons; drop them")
        z = (x - center) / scale
        n = z.shape[0]
        progress = progress_default() if progress is None else bool(progress)
        k_max = min(int(self.max_types), n)
        ks = list(range(1, k_max + 1)) if self.selection == "loo" else [k_max]
        alpha = self.prior_concentration
        if alpha is None:
            alpha = 1.0 if self.selection == "loo" else 1.0 / k_max
        keys = jax.random.split(resolve_key(key, needed=True, why="NeuronTypes.fit (restarts and draws)"), len(ks))
        fits, draws = {}, {}
        bar = progress_bar(total=sum(1 if k == 1 else n_restarts for k in ks) + len(ks), disable=not progress,
                   desc="NeuronTypes")
        for k, kk in zip(ks, keys):
            fits[k], draws[k] = self._fit_k(z, k, k_max, alpha, kk, method, n_restarts, feats.names,
                                            feats.neuron_ids, infer_options, bar)
            bar.update(1)
        bar.close()
        self.fits_ = fits
        self.feature_names_, self.neuron_ids_ = feats.names, feats.neuron_ids
        self.center_, self.scale_, self._log_mask_, self._z = center, scale, log_mask, z
        self._x = feats.values
        self.cv_table_, self.selection_ = None, self.selection
        if self.selection == "loo" and len(ks) > 1:
            import warnings

            import arviz as az

            from ..diagnostics import loo

            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*inplace keyword.*")
                # the Pareto-k diagnostic is checked here, with what to do, not by arviz's generic warning
                warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
                loos = {k: loo(f.to_inference_data(), pointwise=True) for k, f in fits.items()}
                table = az.compare({f"K={k}": v for k, v in loos.items()}, ic="loo")
            self.loo_table_ = table
            high = {k: int(np.sum(np.asarray(v.pareto_k) > PARETO_K_MAX)) for k, v in loos.items()}
            over = {k: float(v.p_loo) for k, v in loos.items() if float(v.p_loo) > n}
            if any(high.values()) or over:
                n_folds = min(int(cv_folds), n)
                bad = ", ".join(f"K={k}: {c}" for k, c in high.items() if c)
                warnings.warn(
                    "PSIS-LOO is unreliable for choosing the number of types: "
                    + (f"neurons with Pareto k > {PARETO_K_MAX} ({bad} of {n})" if bad else "")
                    + ("; " if bad and over else "")
                    + (f"more effective parameters than neurons (p_loo {', '.join(f'K={k}: {p:.0f}' for k, p in over.items())} > {n})"
                       if over else "")
                    + f". The number of types is chosen by {n_folds}-fold cross-validation over neurons instead "
                    "(cv_table_; loo_table_ kept for reference). Few neurons support only a few types: "
                    "lower max_types or use fewer features", UserWarning, stacklevel=2,
                )
                table = self._kfold_table(z, ks, k_max, alpha, key, method, n_restarts, feats, infer_options,
                                          n_folds)
                self.cv_table_, self.selection_ = table, "kfold"
            within = table["elpd_diff"] <= float(self.parsimony) * table["dse"] + 1e-12
            chosen = min(int(name[2:]) for name in table.index[within.to_numpy()])
            if chosen == ks[-1] and k_max < n:
                _warn_if_on_edge(chosen, ks, what="number of types", floor=1,
                                 how="raise max_types", stacklevel=2)
        else:
            self.loo_table_ = None
            chosen = ks[-1]
        self.result_ = fits[chosen]
        self._summarise(draws[chosen])
        return self

    def _fit_k(self, z, k, k_max, alpha, key, method, n_restarts, names, neuron_ids, infer_options, bar,
               idata: bool = True):
        """The fit of K types (best of the restarts, then `method`) and its tidy draws; ``idata``:
        build the result's InferenceData (pointwise log-likelihood, for LOO) from the padded programs
        (cross-validation folds need only the draws)."""
        n, d = z.shape
        # the neurons padded to a bucket count (zero rows, masked out of the likelihood): another
        # number of neurons in the bucket, and the folds of the cross-validation, reuse the programs
        n_pad = bucket_length(n, minimum=8)
        data_kw = {"n_neuron": n_pad, "n_feature": d, "n_types": k_max, "concentration": float(alpha),
                   "active": np.arange(k_max) < k, "z": pad_axis(z, n_pad), "mask": np.arange(n_pad) < n}
        mode = self._best_mode(z, k, k_max, key, data_kw, bar, n_restarts)
        opts = dict(infer_options)
        opts.setdefault("init_strategy", init_to_value(values=mode))
        fit = _infer_fit(mixture_model, method=method, key=jax.random.fold_in(key, 1),
                         coords={"neuron": np.arange(n_pad), "feature": names, "type": np.arange(k_max)},
                         dims={"weights": ["type"], "raw_weights": ["type"], "means": ["type", "feature"],
                               "scales": ["type", "feature"], "z": ["neuron", "feature"], "mask": ["neuron"],
                               "active": ["type"], "features": ["neuron"]},
                         progress=False, model_kwargs=data_kw, **opts)
        # the InferenceData (pointwise log-likelihood for LOO) from the padded programs, then the
        # data's neurons only; the result describes the neurons given, not the padding
        full = None
        if idata:
            full = fit.to_inference_data().isel(neuron=slice(0, n))
            for group in full.groups():
                if "neuron" in full[group].dims:
                    full[group] = full[group].assign_coords(neuron=np.asarray(neuron_ids))
        unpad_result(fit, n, ("z",), coords={"neuron": np.asarray(neuron_ids)})
        fit.model_kwargs["n_neuron"] = n
        fit._idata = full
        return fit, _tidy_draws(fit, k, mode["means"][:k])

    def _kfold_table(self, z, ks, k_max, alpha, key, method, n_restarts, feats, infer_options, n_folds):
        """K-fold cross-validation over neurons: the held-out log predictive density of each
        neuron's features under each K fitted to the other folds, as a table like ``az.compare``'s
        (``elpd``, ``se``, ``elpd_diff`` and ``dse`` from the paired per-neuron differences)."""
        import pandas as pd

        from .._progress import progress_bar

        n = z.shape[0]
        base = jax.random.fold_in(resolve_key(key, needed=True, why="K-fold cross-validation"), 7919)
        perm = np.asarray(jax.random.permutation(base, n))
        lpd = np.zeros((len(ks), n))
        failed: set = set()
        quiet = progress_bar(total=1, disable=True)
        for f, test in enumerate(np.array_split(perm, n_folds)):
            train = np.setdiff1d(np.arange(n), test)
            for i, k in enumerate(ks):
                kk = jax.random.fold_in(base, 1000 * f + k)
                try:
                    _, post = self._fit_k(z[train], k, k_max, alpha, kk, method, n_restarts, feats.names,
                                          feats.neuron_ids[train], infer_options, quiet, idata=False)
                except RuntimeError:  # no proper mode on this fold: K is not supported there
                    failed.add(k)
                    lpd[i, test] = np.nan
                    continue
                flat = post.stack(sample=("chain", "draw")).transpose("sample", ...)
                zt = z[test]
                lpd[i, test] = _draws_log_predictive(zt, *(flat[v].values for v in ("weights", "means", "scales")))
        quiet.close()
        if failed:
            import warnings

            warnings.warn(f"K-fold cross-validation: the K={sorted(failed)} mixtures reached no proper mode on some "
                          "folds; those K are left out of the choice", UserWarning, stacklevel=3)
        elpd = lpd.sum(1)
        best = int(np.nanargmax(elpd))
        diff = lpd[best] - lpd
        table = pd.DataFrame({
            "elpd_kfold": elpd,
            "se": np.sqrt(n * lpd.var(axis=1, ddof=1)),
            "elpd_diff": elpd[best] - elpd,
            "dse": np.sqrt(n * diff.var(axis=1, ddof=1)),
        }, index=[f"K={k}" for k in ks])
        return table.sort_values("elpd_diff")

    def _log_mask(self, names: np.ndarray) -> np.ndarray:
        if isinstance(self.log_features, str):
            if self.log_features != "all":
                raise ValueError(f"log_features must be 'all' or a list of feature names, got {self.log_features!r}")
            return np.ones(names.shape, dtype=bool)
        wanted = list(self.log_features)
        unknown = [f for f in wanted if f not in names.tolist()]
        if unknown:
            raise ValueError(f"log_features {unknown} are not among the features {names.tolist()}")
        return np.isin(names, wanted)

    def _best_mode(self, z, n_types, n_pad, key, data_kw, bar, n_restarts) -> dict:
        """Constrained mode of the best of several k-means++ starts (Laplace objective)."""
        seeds = np.asarray(jax.random.randint(key, (n_restarts,), 0, 2**31 - 1))
        best, best_obj = None, np.inf
        for r in range(1 if n_types == 1 else n_restarts):
            rng = np.random.default_rng(int(seeds[r]))
            start = _padded_start(_kmeanspp_start(z, n_types, rng), n_pad, rng)
            try:
                res = _infer_fit(mixture_model, method="laplace", key=int(seeds[r]), num_samples=1,
                                 init_strategy=init_to_value(values=start), progress=False,
                                 model_kwargs=data_kw)
            except np.linalg.LinAlgError:  # a saddle: no Gaussian there; try the next start
                bar.update(1)
                continue
            bar.update(1)
            if res.info["objective"] < best_obj:
                best_obj, best = res.info["objective"], res.info["mode"]
        if best is None:
            raise RuntimeError(f"no start of the K={n_types} mixture reached a proper mode; lower max_types")
        out = {"means": np.asarray(best["means"]), "scales": np.exp(np.asarray(best["scales"]))}
        if n_pad > 1:
            out["raw_weights"] = np.asarray(biject_to(constraints.simplex)(best["raw_weights"]))
        return out

    def _summarise(self, post: xr.Dataset) -> None:
        self.posterior_ = post
        flat = post.stack(sample=("chain", "draw")).transpose("sample", ...)
        w, m, s = (np.asarray(flat[k].values) for k in ("weights", "means", "scales"))
        mem = _draws_membership(self._z, w, m, s)
        types = post["type"].values
        self.membership_ = xr.DataArray(mem, dims=("neuron", "type"),
                                        coords={"neuron": self.neuron_ids_, "type": types}, name="membership")
        self.labels_ = mem.argmax(1)
        self.n_types_ = int(types.size) if self.selection == "loo" else int(np.unique(self.labels_).size)
        self.weights_ = post["weights"].mean(("chain", "draw")).rename("weights")
        self.type_means_ = xr.DataArray(self._to_original(np.asarray(m)).mean(0), dims=("type", "feature"),
                                        coords={"type": types, "feature": self.feature_names_}, name="type_means")

    def _to_original(self, means: np.ndarray) -> np.ndarray:
        """Standardised means (..., type, feature) in original feature units."""
        out = means * self.scale_ + self.center_
        return np.where(self._log_mask_, np.exp(out), out)

    # -- outputs ------------------------------------------------------------------------------

    # -- likelihood of (held-out) neurons ---------------------------------------------------------

    def _standardised(self, data: Any) -> np.ndarray:
        self._check_fitted()
        feats = _as_features(data, self.features, None, None)
        x = feats.values.copy()
        if x.shape[1] != self.feature_names_.size:
            raise ValueError(f"data have {x.shape[1]} features but the model was fitted to "
                             f"{self.feature_names_.size} ({self.feature_names_.tolist()})")
        for j in np.flatnonzero(self._log_mask_):
            if np.any(x[:, j] <= 0):
                raise ValueError(f"feature {self.feature_names_[j]!r} is log-transformed but has values <= 0")
            x[:, j] = np.log(x[:, j])
        return (x - self.center_) / self.scale_

    def _draw_params(self) -> MixtureParams:
        flat = self.posterior_.stack(sample=("chain", "draw")).transpose("sample", ...)
        return MixtureParams(*(np.asarray(flat[k].values) for k in ("weights", "means", "scales")))

    def log_likelihood(self, data: Any) -> np.ndarray:
        """Log density (nats) of each neuron's standardised features under the mixture at the
        posterior mean weights, means and scales, shape (neuron,).

        Features are log-transformed and standardised with the training centre and scale, as in
        ``fit`` (the model's data ``z``, as in the ``log_likelihood`` group).
        """
        z = self._standardised(data)
        p = self._draw_params()
        mean = MixtureParams(*(a.mean(0) for a in p))
        return _draws_log_likelihood(z, *(a[None] for a in mean))[0]

    def _log_predictive(self, data: Any) -> np.ndarray:
        z = self._standardised(data)
        return _draws_log_predictive(z, *self._draw_params())

    def score(self, data: Any) -> float:
        """Log posterior predictive density of each neuron's standardised features (averaged over
        the posterior draws), averaged over neurons, in nats/neuron (higher is better).
        """
        return float(np.mean(self._log_predictive(data)))

    def evaluate(self, data: Any) -> dict:
        """``log_predictive`` (neuron,): the terms of :meth:`score`; ``log_likelihood`` (neuron,);
        ``membership`` (neuron, type): posterior type probabilities of each neuron; ``score``."""
        z = self._standardised(data)
        p = self._draw_params()
        mem = _draws_membership(z, *p)
        lp = self._log_predictive(data)
        return {"log_predictive": lp, "log_likelihood": self.log_likelihood(data), "membership": mem,
                "score": float(lp.mean())}

    def posterior_statistics(self, *, key: Any, num_samples: int = 1000) -> dict:
        """Posterior draws of the type summary statistics (for ``compare_states``).

        Statistics:

        - ``weights`` ``(draw, type)``: mixing weights, types ordered by decreasing posterior
          mean weight;
        - ``means`` ``(draw, type, feature)``: type means in original feature units;
        - ``effective_n_types`` ``(draw,)``: :math:`\\exp(-\\sum_k w_k \\log w_k)`, the
          perplexity of the weights (label-free, so comparable across fits).

        `num_samples` draws are taken by `key` from the stored ones (with replacement only when
        there are too few).
        """
        self._check_fitted()
        flat = self.posterior_.stack(sample=("chain", "draw")).transpose("sample", ...)
        n = flat.sizes["sample"]
        key = resolve_key(key, needed=True, why="posterior_statistics (resampling draws)")
        idx = np.asarray(jax.random.choice(key, n, (int(num_samples),), replace=int(num_samples) > n))
        w = flat["weights"].values[idx]
        m = self._to_original(flat["means"].values[idx])
        types = self.posterior_["type"].values
        draw = np.arange(idx.size)
        ent = -np.sum(w * np.log(np.where(w > 0, w, 1.0)), axis=1)
        return {
            "weights": xr.DataArray(w, dims=("draw", "type"), coords={"draw": draw, "type": types}),
            "means": xr.DataArray(m, dims=("draw", "type", "feature"),
                                  coords={"draw": draw, "type": types, "feature": self.feature_names_}),
            "effective_n_types": xr.DataArray(np.exp(ent), dims=("draw",), coords={"draw": draw}),
        }

    def to_inference_data(self):
        """ArviZ InferenceData of the chosen fit.

        ``posterior``: ``weights`` ``(chain, draw, type)``, ``means`` and ``scales``
        ``(chain, draw, type, feature)`` in standardised units, relabelled and ordered as the
        fitted attributes; ``log_likelihood``: ``features`` ``(chain, draw, neuron)``;
        ``constant_data``: the standardised features ``z`` ``(neuron, feature)``.
        """
        import arviz as az

        self._check_fitted()
        idata = self.result_.to_inference_data()
        return az.InferenceData(posterior=self.posterior_, log_likelihood=idata.log_likelihood,
                                constant_data=xr.Dataset({"z": (("neuron", "feature"), self._z)},
                                                         coords={"neuron": self.neuron_ids_,
                                                                 "feature": self.feature_names_}))


def plot_types(model: NeuronTypes, x: str, y: str, *, ax=None):
    """Scatter of two features, coloured by most likely type, opacity the membership probability.

    Parameters
    ----------
    model : NeuronTypes
        Fitted.
    x, y : str
        Feature names (log-transformed features are drawn on log axes).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> feats = np.concatenate([rng.normal(0, 0.3, (10, 2)), rng.normal(3, 0.3, (10, 2))])
    >>> nt = NeuronTypes(2, selection="sparse").fit(feats, key=0, n_restarts=1, feature_names=["a", "b"],
    ...                                            progress=False)
    >>> plot_types(nt, "a", "b").get_xlabel()
    'a'
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    model._check_fitted()
    names = model.feature_names_.tolist()
    for f in (x, y):
        if f not in names:
            raise ValueError(f"no feature {f!r}; the features are {names}")
    i, j = names.index(x), names.index(y)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.6, 3.2))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    alpha = model.membership_.values.max(1)
    colours = [to_rgba(cycle[lab % len(cycle)], a) for lab, a in zip(model.labels_, alpha)]
    ax.scatter(model._x[:, i], model._x[:, j], c=colours, s=18, edgecolors="none")
    for k in range(model.membership_.sizes["type"]):
        if np.any(model.labels_ == k):
            ax.scatter([], [], color=cycle[k % len(cycle)], label=f"type {k}")
    if model._log_mask_[i]:
        ax.set_xscale("log")
    if model._log_mask_[j]:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize="small")
    return ax
