r"""The estimator contract: what every public bayesneuro estimator promises.

Every estimator -- :class:`~bayesneuro.PoissonGLM`, :class:`~bayesneuro.GPFA`,
:class:`~bayesneuro.PoissonLDS`, every decoder of :mod:`bayesneuro.decoders` and every model of
:mod:`bayesneuro.density` -- derives from :class:`Estimator` and keeps these rules, so that one
piece of code (:func:`~bayesneuro.decoders.evaluation.cross_validate`,
:func:`~bayesneuro.density.compare_states`, sklearn's ``clone`` and model-selection helpers)
works with all of them without special cases.

Structure in the constructor, inference in ``fit``
    ``Estimator(**structure)`` holds what the model *is* (bases, priors, number of latents,
    grid, link); each argument is stored unchanged under its own name, so
    :meth:`Estimator.get_params` / :meth:`Estimator.set_params` / :func:`clone` work as in
    sklearn. How to fit it goes to ``fit`` only:
    ``fit(data[, target], *, method=..., key=None, progress=None, **options) -> self``.
    The iteration cap is always ``max_iter`` and the tolerance ``tol``.

Keys
    ``key`` is accepted by every ``fit``. It is required only when the chosen method draws
    random numbers (NUTS, SVI, random restarts, bootstrap, Monte-Carlo learning); then a clear
    ``TypeError`` says so (:func:`resolve_key`). The same key gives the same fit.

``score(data[, target]) -> float``
    Higher is better. Its unit is in the docstring and in the attribute ``score_unit``
    (for example ``"bits/spike"``, ``"nats/bin"``). The dictionaries of metrics a model can
    report go to ``evaluate(data[, target]) -> dict``.

``log_likelihood(data[, target]) -> numpy.ndarray``
    The pointwise log-likelihood in nats at the fitted estimate, **one value per independent
    observation unit**, a 1-D array whose length is the number of units. The unit is named by
    the attribute ``log_likelihood_dim``: ``"time"`` for models whose time bins are independent
    given the fit (GLM, decoders, maximum-entropy models, factor analysis), ``"trial"`` for
    models with temporal dependence (GPFA, PoissonLDS, PoissonHMM), ``"isi"`` for renewal
    models, ``"neuron"`` for models of per-neuron features. ``log_likelihood(data).sum()`` is
    the total log-likelihood of ``data``.

``to_inference_data() -> arviz.InferenceData``
    With named dims and coords, and a ``log_likelihood`` group (one variable, dims
    ``chain, draw, <log_likelihood_dim>``) wherever the model has a likelihood, so that
    ``az.loo`` and ``az.compare`` rank fitted models of the same data.

Credible mass
    Always ``prob``, default :data:`PROB` (0.9); several masses at once are ``probs``.

Square matrices
    A matrix that maps a dim to itself has the dims ``<dim>`` and ``<dim>_from``: the axis it
    maps *from* is ``<dim>_from`` (dynamics ``A[latent, latent_from]`` in
    :math:`x_t = A x_{t-1}`; HMM transitions ``P[hidden_state_from, hidden_state]``); a
    symmetric matrix (a covariance) takes ``<dim>_from`` as its second axis.

Examples
--------
>>> import bayesneuro as bn
>>> glm = bn.PoissonGLM(coupling=False)
>>> twin = bn.estimator.clone(glm.set_params(bias_prior=(0.0, 5.0)))
>>> twin.get_params()["bias_prior"]
(0.0, 5.0)
>>> twin is glm
False
"""

from __future__ import annotations

import contextvars
import copy
import functools
import inspect
import warnings
from typing import Any

import jax
import numpy as np

from bayesneuro import _xla_cpu  # noqa: F401  (batched LAPACK on CPU as loops: no thread-pool deadlock)

__all__ = ["Estimator", "PROB", "PROBS", "clone", "nonfinite_attributes", "numpy_generator", "resolve_key", "split_key",
           "NotFittedError"]

#: Default credible mass of every interval, band and region in bayesneuro.
PROB = 0.9
#: Default masses at which coverage of credible regions is reported.
PROBS = (0.5, 0.9, 0.95)


class NotFittedError(RuntimeError):
    """An estimator was used before ``fit``."""


def resolve_key(key: Any, *, needed: bool, why: str = "") -> jax.Array | None:
    """Check and normalise a ``key`` argument of ``fit``.

    Parameters
    ----------
    key : jax.random key, int or None
    needed : bool
        Whether the chosen method draws random numbers.
    why : str
        What draws them, for the error message (e.g. ``"method='nuts'"``).

    Returns
    -------
    jax.Array or None
        A raw ``uint32[2]`` key, or None when `key` is None and no key is needed.

    Raises
    ------
    TypeError
        `key` is None although the method needs one, or not a key.

    Examples
    --------
    >>> from bayesneuro.estimator import resolve_key
    >>> resolve_key(None, needed=False) is None
    True
    >>> resolve_key(None, needed=True, why="method='nuts'")
    Traceback (most recent call last):
    ...
    TypeError: method='nuts' draws random numbers: pass key=jax.random.key(0) (or an int seed) to fit; the same key gives the same result
    """
    from .infer._model import as_key

    if key is None:
        if needed:
            what = why or "this fit"
            raise TypeError(
                f"{what} draws random numbers: pass key=jax.random.key(0) (or an int seed) to fit; "
                "the same key gives the same result"
            )
        return None
    return as_key(key)


def numpy_generator(key: Any, *, why: str) -> np.random.Generator:
    """A numpy ``Generator`` seeded from a JAX key (or int), for numpy code that draws numbers
    (k-means starts, FastICA's start, shuffles): the same key gives the same draws.

    Raises
    ------
    TypeError
        `key` is None (`why` names what needs it).

    Examples
    --------
    >>> from bayesneuro.estimator import numpy_generator
    >>> a = numpy_generator(0, why="a demo").normal(size=3)
    >>> b = numpy_generator(0, why="a demo").normal(size=3)
    >>> bool((a == b).all())
    True
    """
    k = resolve_key(key, needed=True, why=why)
    return np.random.default_rng(int(np.asarray(jax.random.randint(k, (), 0, 2**31 - 1))))


def split_key(key: Any, n: int) -> list:
    """``n`` independent keys from `key` (None gives ``n`` Nones): one per fold, state or refit.

    Examples
    --------
    >>> from bayesneuro.estimator import split_key
    >>> len(split_key(0, 3)), split_key(None, 2)
    (3, [None, None])
    """
    if key is None:
        return [None] * int(n)
    from .infer._model import as_key

    return list(jax.random.split(as_key(key), int(n)))


class Estimator:
    """Base class of every public estimator: parameters, cloning and fitted-state checks.

    Subclasses store each constructor argument unchanged under its own name (derived values go
    to private attributes or are computed in ``fit``), set fitted attributes with a trailing
    underscore, and declare ``score_unit`` and ``log_likelihood_dim``.
    """

    #: Unit of :meth:`score` (higher is always better).
    score_unit: str = ""
    #: Fitted attributes and ``evaluate`` keys that may be NaN by design (a metric that is not
    #: defined for the model); others that are NaN give a warning (see ``__init_subclass__``).
    _nan_allowed: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Guard ``fit``, ``score`` and ``evaluate`` of every subclass against silent NaN.

        After ``fit``, a fitted attribute (trailing ``_``) with no finite value at all gives a
        :class:`~bayesneuro.diagnostics.NonFiniteWarning` naming it (attributes with some NaN
        entries, e.g. a statistic of a silent neuron, are left alone); a NaN ``score`` or a NaN
        scalar entry of ``evaluate`` gives one naming the fitted attributes that hold NaN or inf
        (the usual cause) and what to do. The checks run once per outermost call (not again in
        ``super().fit(...)``).
        """
        super().__init_subclass__(**kwargs)
        for name in ("fit", "score", "evaluate"):
            fn = cls.__dict__.get(name)
            if callable(fn) and not getattr(fn, "_nan_guarded", False):
                setattr(cls, name, _guarded(name, fn))
    #: Observation unit of :meth:`log_likelihood` (``"time"``, ``"trial"``, ``"isi"``, ``"neuron"``).
    log_likelihood_dim: str = "time"

    @classmethod
    def _param_names(cls) -> list[str]:
        init = cls.__init__
        if init is object.__init__:
            return []
        sig = inspect.signature(init)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must not take *args or **kwargs (sklearn-style parameters)")
            names.append(p.name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments of this estimator, as stored (sklearn-compatible).

        Parameters
        ----------
        deep : bool
            Also list the parameters of nested estimators as ``name__param``.
        """
        out = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update({f"{name}__{k}": v for k, v in value.get_params().items()})
            out[name] = value
        return out

    def set_params(self, **params: Any):
        """Change constructor arguments; returns ``self`` with the new structure, **unfitted**.

        The constructor runs again with the merged arguments, so they are validated as at
        construction, and fitted attributes are dropped (a fit of another structure would be
        wrong for the new one).
        """
        if not params:
            return self
        valid = self.get_params(deep=False)
        nested: dict[str, dict] = {}
        for k, v in params.items():
            name, _, sub = k.partition("__")
            if name not in valid:
                raise ValueError(
                    f"{type(self).__name__} has no parameter {name!r}; its parameters are {sorted(valid)}"
                )
            if sub:
                nested.setdefault(name, {})[sub] = v
            else:
                valid[name] = v
        for name, sub in nested.items():
            valid[name] = clone(valid[name]).set_params(**sub)
        fresh = type(self)(**valid)
        self.__dict__.clear()
        self.__dict__.update(fresh.__dict__)
        return self

    #: Whether ``fit`` takes a target (decoders) besides the spike data.
    _requires_target: bool = False

    def __sklearn_clone__(self):
        return clone(self)

    def __sklearn_tags__(self):
        """scikit-learn's estimator tags (read by its model-selection helpers; sklearn imported lazily)."""
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=self._requires_target),
                    non_deterministic=False, requires_fit=True)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(...) first")

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` has run (some attribute ending in ``_`` is set)."""
        return any(k.endswith("_") and not k.startswith("_") and v is not None for k, v in vars(self).items())

    def __repr__(self) -> str:
        params = self.get_params(deep=False)
        try:
            defaults = {
                k: p.default for k, p in inspect.signature(type(self).__init__).parameters.items()
                if p.default is not inspect.Parameter.empty
            }
        except (TypeError, ValueError):  # pragma: no cover
            defaults = {}
        shown = []
        for k, v in params.items():
            d = defaults.get(k, inspect.Parameter.empty)
            try:
                same = d is not inspect.Parameter.empty and bool(np.all(d == v)) if not hasattr(v, "__dict__") else d is v
            except Exception:  # noqa: BLE001 - comparing arbitrary objects
                same = False
            if not same:
                shown.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


#: ids of the estimators with a guarded call running: inner calls on the same estimator
#: (``super().score``, ``evaluate`` calling ``score``) skip the checks, which the outermost makes.
_GUARDED_CALLS: contextvars.ContextVar[frozenset] = contextvars.ContextVar("bayesneuro_nan_guard",
                                                                          default=frozenset())


def _nonfinite(value: Any, test=np.isfinite) -> bool:
    """Whether a float scalar, array, DataArray, Dataset, or a dict or tuple of them, holds NaN or
    inf (where ``test`` fails)."""
    import xarray as xr

    if isinstance(value, xr.Dataset):
        return any(_nonfinite(v, test) for v in value.data_vars.values())
    if isinstance(value, dict):
        return any(_nonfinite(v, test) for v in value.values())
    if isinstance(value, tuple):  # NamedTuples of parameters
        return any(_nonfinite(v, test) for v in value)
    if isinstance(value, xr.DataArray):
        value = value.values
    if isinstance(value, (float, np.floating, np.ndarray, jax.Array)) and not isinstance(value, bool):
        arr = np.asarray(value)
        return arr.dtype.kind in "fc" and arr.size > 0 and not bool(np.all(test(arr)))
    return False


def _not_nan(arr):
    return ~np.isnan(arr)


def _any_finite(arr):
    """Fails (flags) only an array with no finite value at all: a fit that broke down."""
    return np.full(arr.shape, bool(np.isfinite(arr).any()))


def nonfinite_attributes(estimator: Any) -> list[str]:
    """Names of the fitted attributes (trailing ``_``) of `estimator` that hold NaN or inf.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.estimator import Estimator, nonfinite_attributes
    >>> e = Estimator()
    >>> e.rate_, e.ok_ = np.array([1.0, np.nan]), np.ones(2)
    >>> nonfinite_attributes(e)
    ['rate_']
    """
    return sorted(k for k, v in vars(estimator).items()
                  if k.endswith("_") and not k.startswith("_") and _nonfinite(v))


def _nan_message(est: Any, what: str) -> str:
    bad = [k for k in nonfinite_attributes(est) if k not in type(est)._nan_allowed]
    cause = (f"the fitted attributes {bad} hold NaN or inf, so the fit itself broke down"
             if bad else "the fitted attributes are finite, so the model gives NaN on this data "
             "(a posterior that is zero everywhere, rates that overflow, bins the fit never saw)")
    return (f"{type(est).__name__}.{what} is NaN: {cause}. Check the warnings of fit, rescale or "
            "clean the data (silent neurons, NaN covariates), use stronger priors or a coarser "
            "grid, and refit; a NaN score must not be averaged or compared.")


def _guarded(name: str, fn):
    """``fn`` (an estimator's fit, score or evaluate) with the NaN checks of :class:`Estimator`."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        call = id(self)
        running = _GUARDED_CALLS.get()
        if call in running:  # an inner call (super().score(...)): the outermost one checks
            return fn(self, *args, **kwargs)
        token = _GUARDED_CALLS.set(running | {call})
        try:
            from ._pynapple import _call_keeping_warning_sites

            # this wrapper adds a frame: warnings of fn keep pointing at the user's line
            out = _call_keeping_warning_sites(fn, self, *args, **kwargs)
        finally:
            _GUARDED_CALLS.reset(token)
        from .diagnostics import NonFiniteWarning

        if name == "fit":
            bad = [k for k in vars(self) if k.endswith("_") and not k.startswith("_")
                   and k not in type(self)._nan_allowed and _nonfinite(vars(self)[k], _any_finite)]
            if bad:
                warnings.warn(
                    f"{type(self).__name__}.fit returned NaN or infinite estimates in {bad}: the fit "
                    "broke down for some parameters (silent neurons, overflowing rates, a singular "
                    "covariance). Check the fit's other warnings, drop silent neurons or rescale "
                    "covariates, use stronger priors, and refit.",
                    NonFiniteWarning, stacklevel=2,
                )
        elif name == "score":
            if _nonfinite(out, _not_nan):
                warnings.warn(_nan_message(self, "score()"), NonFiniteWarning, stacklevel=2)
        elif isinstance(out, dict):
            keys = sorted(str(k) for k, v in out.items()
                          if np.ndim(v) == 0 and k not in type(self)._nan_allowed and _nonfinite(v, _not_nan))
            if keys:
                warnings.warn(_nan_message(self, f"evaluate()[{keys}]"), NonFiniteWarning, stacklevel=2)
        return out

    wrapper._nan_guarded = True
    return wrapper


def clone(estimator: Any) -> Any:
    """An unfitted copy of `estimator` with the same constructor arguments (deep-copied).

    Works on any bayesneuro estimator and on sklearn estimators.

    Examples
    --------
    >>> import bayesneuro as bn
    >>> a = bn.GPFA(n_latents=2)
    >>> b = bn.estimator.clone(a)
    >>> b.get_params()["n_latents"], b is a
    (2, False)
    """
    if isinstance(estimator, (list, tuple, set, frozenset)):
        return type(estimator)(clone(e) for e in estimator)
    if not hasattr(estimator, "get_params") or isinstance(estimator, type):
        return copy.deepcopy(estimator)
    params = estimator.get_params(deep=False)
    return type(estimator)(**{k: clone(v) for k, v in params.items()})
