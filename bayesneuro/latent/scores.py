"""Scores of latent-variable fits on simulated data.

:func:`latent_recovery_r2` asks how well fitted latents recover the true ones up to the
symmetries every latent model has (rotation, scaling, sign and offset): the R^2 of each true
latent after the best affine map from the fitted latents, by least squares. Co-smoothing on
held-out neurons is :func:`bayesneuro.latent.plds.cosmoothing_bits_per_spike` (and the models'
``score`` methods).
"""

from __future__ import annotations

import numpy as np

__all__ = ["latent_recovery_r2"]


def latent_recovery_r2(estimated, true, *, per_latent: bool = False):
    r"""R^2 of the true latents after the best affine map from the estimated ones.

    Solves ``min_W,b |true - (estimated W + b)|^2`` by least squares and returns
    ``1 - SS_res / SS_tot`` for each true latent (``SS_tot`` about its mean). It is 1 when the
    fitted latents are any invertible affine transform of the true ones, which is all a latent
    model can identify; it is computed in-sample, so with more estimated than true latents it
    can only grow (compare fits of one dimensionality, or use held-out bins).

    Parameters
    ----------
    estimated : array_like, shape (time, n_est)
        Fitted latents (e.g. posterior means, all trials stacked along ``time``).
    true : array_like, shape (time, n_true)
        The simulated latents, bin for bin.
    per_latent : bool
        Return one R^2 per true latent instead of their mean.

    Returns
    -------
    float or numpy.ndarray, shape (n_true,)

    Raises
    ------
    ValueError
        If the shapes do not match in ``time``, values are not finite, a true latent is
        constant, or there are fewer bins than estimated latents + 1.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.scores import latent_recovery_r2
    >>> x = np.random.default_rng(0).normal(size=(200, 2))
    >>> rotated = x @ np.array([[0.0, -2.0], [1.0, 0.5]]) + 3.0
    >>> round(latent_recovery_r2(rotated, x), 12)
    1.0
    """
    est = np.asarray(estimated, dtype=float)
    tru = np.asarray(true, dtype=float)
    est = est[:, None] if est.ndim == 1 else est
    tru = tru[:, None] if tru.ndim == 1 else tru
    if est.ndim != 2 or tru.ndim != 2 or est.shape[0] != tru.shape[0]:
        raise ValueError(f"estimated and true must be (time, latent) with the same time, got {est.shape} and "
                         f"{tru.shape}")
    if not (np.all(np.isfinite(est)) and np.all(np.isfinite(tru))):
        raise ValueError("estimated and true latents must be finite (no NaN or inf)")
    if est.shape[0] <= est.shape[1] + 1:
        raise ValueError(f"need more bins ({est.shape[0]}) than estimated latents + 1 ({est.shape[1] + 1})")
    centred = tru - tru.mean(axis=0)
    ss_tot = np.sum(centred**2, axis=0)
    if np.any(ss_tot == 0):
        raise ValueError(f"true latents {np.flatnonzero(ss_tot == 0).tolist()} are constant; R^2 is undefined")
    X = np.column_stack([est, np.ones(len(est))])
    coef, *_ = np.linalg.lstsq(X, tru, rcond=None)
    r2 = 1.0 - np.sum((tru - X @ coef) ** 2, axis=0) / ss_tot
    return r2 if per_latent else float(r2.mean())
