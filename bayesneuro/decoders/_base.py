"""What every decoder shares: the estimator contract on top of ``fit`` and ``decode``.

A decoder subclasses :class:`Decoder` and implements ``fit``, ``decode`` and two hooks:
``_pointwise_log_likelihood`` (the fitted encoding model's log-likelihood of each decoded bin's
observations given the true target) and ``_posterior_variables`` (the fitted parameters, for
:meth:`Decoder.to_inference_data`). ``score``, ``evaluate``, ``log_likelihood`` and
``to_inference_data`` are shared.
"""

from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np

from ..estimator import PROBS, Estimator
from . import scores as _scores
from ._inputs import as_spike_data, label_array, target_array
from .._pynapple import pynapple_io


class Decoder(Estimator, metaclass=abc.ABCMeta):
    """Base class of the decoders of :mod:`bayesneuro.decoders`.

    ``decode`` returns a posterior whose ``index`` attribute lists the bins of the data it
    decoded (all of them, except for decoders with lags that drop incomplete windows).
    ``score`` is the mean log posterior density of the truth per decoded bin (nats/bin, higher
    is better), ``evaluate`` the dictionary of metrics, ``log_likelihood`` the fitted encoding
    model's log-likelihood per decoded bin, and ``to_inference_data`` the fit as ArviZ.
    """

    #: Unit of :meth:`score`.
    score_unit = "nats/bin"
    #: One log-likelihood value per decoded time bin.
    log_likelihood_dim = "time"
    _requires_target = True
    #: Methods ``fit`` accepts (the first is the default).
    METHODS: tuple[str, ...] = ()
    #: Options ``fit`` accepts for each method, with their defaults.
    _FIT_OPTIONS: dict[str, dict[str, Any]] = {}
    _discrete = False
    #: Name of the observed variable of the ``log_likelihood`` group.
    _observed_name = "counts"

    @abc.abstractmethod
    def fit(self, data: Any, target: Any, *, method: str, key: Any = None, progress: bool | None = None,
            **options: Any) -> Decoder:
        """Fit the decoder to training `data` and `target`; returns itself."""

    @abc.abstractmethod
    def decode(self, data: Any) -> Any:
        """Posterior of the target in every decodable bin of `data`."""

    # ------------------------------------------------------------------ helpers for fit
    def _check_fit_args(self, method: str, options: dict[str, Any]) -> dict[str, Any]:
        """Validate `method` and the method's `options`; return the options with defaults filled."""
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        allowed = self._FIT_OPTIONS.get(method, {})
        bad = sorted(set(options) - set(allowed))
        if bad:
            raise ValueError(
                f"unknown option(s) {bad} for {type(self).__name__}.fit(method={method!r});"
                f" it takes {sorted(allowed) or 'none'}"
            )
        self._fit_method = method
        return {**allowed, **options}

    def _set_training_log_likelihood(self, data: Any, target: Any) -> None:
        """Keep the pointwise log-likelihood of the training data for :meth:`to_inference_data`."""
        ll, index = self._pointwise_log_likelihood(data, self._truth(data, target))
        self._train_log_likelihood = np.asarray(ll, dtype=np.float64)
        self._train_time = np.asarray(data.bin_centers)[index]

    # ------------------------------------------------------------------ shared machinery
    def _data(self, data: Any) -> Any:
        bs = getattr(self, "bin_size_", None)
        bs = bs if bs is not None and np.isfinite(bs) else None
        return as_spike_data(data, bs)

    def _truth(self, data: Any, target: Any) -> np.ndarray:
        """The true target in every bin of `data` (labels for discrete decoders)."""
        if self._discrete:
            return label_array(data, target)
        return target_array(data, target)[0]

    def _posterior_and_truth(self, data: Any, target: Any) -> tuple[Any, np.ndarray]:
        self._check_fitted()
        data = self._data(data)
        post = self.decode(data)
        truth = self._truth(data, target)
        idx = getattr(post, "index", None)
        if idx is not None:
            truth = truth[idx]
        return post, truth

    @pynapple_io(target=True)
    def score(self, data: Any, target: Any) -> float:
        """Mean log posterior density of the true target per decoded bin, in nats/bin.

        Higher is better. Grid posteriors: the log of (posterior probability / volume) of the
        cell holding the truth, floored (with a warning) where the decoder rules the truth out;
        Gaussian posteriors: the Gaussian log density; classes: the log probability of the true
        class. See :func:`bayesneuro.decoders.scores.log_score`.

        Parameters
        ----------
        data : SpikeData
            Held-out data with the training neurons.
        target : str, sequence of str or array_like
            The true variable, as in ``fit``.

        Returns
        -------
        float
            Nats per decoded bin (the unit is also ``score_unit``).
        """
        post, truth = self._posterior_and_truth(data, target)
        return _scores.log_score(post, truth)

    @pynapple_io(target=True)
    def evaluate(self, data: Any, target: Any, *, probs: Sequence[float] = PROBS) -> dict[str, Any]:
        """Decode `data` and compute every metric against `target` on the decoded bins.

        Parameters
        ----------
        data : SpikeData
            Held-out data with the training neurons.
        target : str, sequence of str or array_like
            The true variable, as in ``fit``.
        probs : sequence of float, default (0.5, 0.9, 0.95)
            Credible masses whose coverage is reported.

        Returns
        -------
        dict
            See :func:`bayesneuro.decoders.scores.evaluate`; ``mean_log_density`` equals
            :meth:`score`.
        """
        post, truth = self._posterior_and_truth(data, target)
        return _scores.evaluate(post, truth, probs)

    @pynapple_io(target=True)
    def log_likelihood(self, data: Any, target: Any) -> np.ndarray:
        """Log-likelihood of each decoded bin's observations given its true target, in nats.

        ``log p(observations_t | target_t)`` under the fitted encoding model, summed over
        neurons, one value per bin that ``decode`` decodes (``log_likelihood_dim = "time"``:
        bins are independent given the target). ``.sum()`` is the total log-likelihood.

        Parameters
        ----------
        data : SpikeData
            Counts of the training neurons.
        target : str, sequence of str or array_like
            The true variable, as in ``fit``.

        Returns
        -------
        ndarray, shape (decoded bins,)
        """
        self._check_fitted()
        data = self._data(data)
        ll, _ = self._pointwise_log_likelihood(data, self._truth(data, target))
        return np.asarray(ll, dtype=np.float64)

    def to_inference_data(self):
        """The fit as ``arviz.InferenceData``: fitted parameters and the training log-likelihood.

        The fit is a point fit (plug-in estimates of the encoding model), so there is no
        ``posterior``: ``point_estimate`` holds the fitted parameters with their own dims (no
        ``chain``/``draw``; :func:`bayesneuro.infer.convert.point_inference_data`) and
        ``attrs["method"]``; ``log_likelihood`` one variable with dims ``(time,)``: the pointwise
        log-likelihood of the training bins at the estimate (:meth:`log_likelihood` on the
        training data). A decoder built from given tuning curves has no training data and so no
        ``log_likelihood`` group.
        """
        from ..infer.convert import point_inference_data

        self._check_fitted()
        variables, coords = self._posterior_variables()
        ll = getattr(self, "_train_log_likelihood", None)
        return point_inference_data(
            variables, method=str(getattr(self, "_fit_method", None) or "plugin"), coords=coords,
            log_likelihood=None if ll is None else {self._observed_name: (("time",), np.asarray(ll))},
            log_likelihood_coords={"time": getattr(self, "_train_time", None)},
        )

    # ------------------------------------------------------------------ hooks
    def _pointwise_log_likelihood(self, data: Any, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(log-likelihood per decoded bin, the decoded bins)`` given the truth of every bin."""
        raise NotImplementedError

    def _posterior_variables(self) -> tuple[dict[str, tuple[tuple[str, ...], Any]], dict[str, Any]]:
        """``({name: (dims, values)}, coords)`` of the fitted parameters."""
        raise NotImplementedError


def attach_index(post: Any, index: np.ndarray) -> Any:
    """Record which bins of the data a posterior decodes."""
    post.index = np.asarray(index, dtype=np.int64)
    return post
