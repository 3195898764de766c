"""How many GPFA latents: leave-neuron-out prediction error on held-out trials.

:func:`choose_n_latents` fits a Gaussian :class:`~bayesneuro.latent.GPFA` for each candidate
number of latents on the training trials of each fold and scores it by predicting each neuron
of the held-out trials from the others (Yu et al. 2009).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import _warn_if_on_edge
from ..estimator import resolve_key
from .gpfa import _GAUSSIAN_OPTIONS, GPFA
from .gpfa_gaussian import _left_out

__all__ = ["NLatentsSelection", "choose_n_latents"]


class NLatentsSelection(NamedTuple):
    """Output of :func:`choose_n_latents`.

    Attributes
    ----------
    errors : xarray.DataArray
        Leave-neuron-out squared prediction error on each fold's held-out trials, dims
        ``(n_latents, fold)``; the sum over folds covers every trial once.
    best : int
        The candidate with the smallest total error.
    """

    errors: Any
    best: int




def choose_n_latents(data, candidates, *, n_folds: int = 5, key: Any, progress: bool | None = None,
                     **options) -> NLatentsSelection:
    """Cross-validated number of latents: leave-neuron-out error on held-out trials.

    Trials are split at random (by ``key``) into ``n_folds`` folds; for each fold and candidate
    a Gaussian :class:`GPFA` is fitted on the other trials and scored by
    :meth:`GPFA.leave_neuron_out_error` on the fold.

    Parameters
    ----------
    data : SpikeData
        With at least ``n_folds`` trials.
    candidates : sequence of int
        Numbers of latents to compare, each smaller than the number of neurons.
    n_folds : int, default 5
    key : jax.random key or int
        Required: shuffles the trials into folds.
    progress : bool, optional
        tqdm bar over the fits.
    **options
        :class:`GPFA` settings (``kernel``, ``count_transform``, ...) and options of its
        Gaussian EM fit (``max_iter``, ``tol``, ``squarem``).

    Returns
    -------
    NLatentsSelection
        ``errors`` (``(n_latents, fold)`` DataArray) and ``best``.

    Raises
    ------
    ValueError
        For a bad candidate or fold count, or a neuron with zero variance in a training fold.

    Warns
    -----
    UserWarning
        The best candidate is the largest one (or the smallest one above 1): widen the range.

    Examples
    --------
    >>> import numpy as np
    >>> import bayesneuro as bn
    >>> from bayesneuro.latent import choose_n_latents
    >>> rng = np.random.default_rng(1)
    >>> z = np.sin(2 * np.pi * np.arange(15) / 15 + rng.uniform(0, 6, (6, 1)))  # one latent
    >>> rates = np.exp(1.0 + 0.8 * z[:, :, None] * np.array([1, -1, 0.5, 1.2]))
    >>> data = bn.SpikeData.from_trials(rng.poisson(rates), bin_size=0.02)
    >>> sel = choose_n_latents(data, [1, 2, 3], n_folds=3, key=0, max_iter=200, progress=False)
    >>> sel.errors.dims, sel.best
    (('n_latents', 'fold'), 1)
    """
    import xarray as xr
    from .._progress import progress_bar, progress_default

    cands = sorted({int(c) for c in np.atleast_1d(candidates)})
    if not cands or cands[0] < 1:
        raise ValueError(f"candidates must be positive integers, got {candidates!r}")
    structure = {k: v for k, v in options.items() if k in GPFA._param_names()}
    fit_options = {k: v for k, v in options.items() if k not in structure}
    unknown = sorted(set(fit_options) - set(_GAUSSIAN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown options {unknown}: GPFA takes {GPFA._param_names()}, its EM fit "
                         f"{sorted(_GAUSSIAN_OPTIONS)}")
    if structure.get("observation", "gaussian") != "gaussian":
        raise ValueError("choose_n_latents compares Gaussian GPFAs (leave-neuron-out squared error)")
    model = GPFA(cands[-1], **structure)
    model._check_data(data, fitting=True)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or not 2 <= n_folds <= data.n_trial:
        raise ValueError(f"n_folds must be an integer in [2, n_trial={data.n_trial}], got {n_folds!r}")
    key = resolve_key(key, needed=True, why="choose_n_latents (it shuffles trials into folds)")
    progress = progress_default() if progress is None else bool(progress)
    perm = np.asarray(jax.random.permutation(key, data.n_trial))
    folds = np.array_split(perm, n_folds)
    y, lengths = model._observations(data)
    errors = np.zeros((len(cands), n_folds))
    bar = progress_bar(total=len(cands) * n_folds, desc="GPFA CV", disable=not progress, leave=False)
    try:
        for f, test in enumerate(folds):
            train = np.setdiff1d(perm, test)
            const = GPFA._constant_neurons(y, lengths, train, data.neuron_ids)
            if const:
                raise ValueError(f"neurons {const[:10]} have zero variance in the training trials of fold {f}; "
                                 "use fewer folds or drop them")
            tr_groups, _ = GPFA._groups(y, lengths, train)
            te_groups, _ = GPFA._groups(y, lengths, test)
            for c, n_lat in enumerate(cands):
                fit = GPFA(n_lat, **structure)._fit_groups(tr_groups, data, False, **fit_options)
                params = fit._jparams()
                errors[c, f] = sum(float(jnp.sum((_left_out(params, g, fit.kernel) - g) ** 2)) for g in te_groups)
                bar.update(1)
    finally:
        bar.close()
    da = xr.DataArray(errors, dims=("n_latents", "fold"), coords={"n_latents": cands, "fold": np.arange(n_folds)},
                      name="left_out_squared_error")
    best = cands[int(np.argmin(errors.sum(axis=1)))]
    _warn_if_on_edge(best, cands, what="number of latents", floor=1,
                     how="widen the candidates (more latents, up to n_neuron - 1)")
    return NLatentsSelection(da, best)
