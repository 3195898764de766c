"""bayesneuro.latent.scores.latent_recovery_r2 against sklearn's LinearRegression + r2_score."""

from __future__ import annotations

import numpy as np
import pytest

from bayesneuro.latent import latent_recovery_r2


def test_matches_sklearn_regression():
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    true = rng.normal(size=(300, 3))
    est = true[:, :2] @ rng.normal(size=(2, 4)) + 0.5 * rng.normal(size=(300, 4))
    pred = LinearRegression().fit(est, true).predict(est)
    ref = r2_score(true, pred, multioutput="raw_values")
    np.testing.assert_allclose(latent_recovery_r2(est, true, per_latent=True), ref, rtol=1e-10)
    assert np.isclose(latent_recovery_r2(est, true), ref.mean(), rtol=1e-10)
    # the third true latent is not in the estimate: close to 0, the others well recovered
    assert ref[2] < 0.1 and np.all(ref[:2] > 0.5)


def test_invariant_to_affine_maps_and_bad_input():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 2))
    noisy = x + 0.3 * rng.normal(size=x.shape)
    a = latent_recovery_r2(noisy, x, per_latent=True)
    b = latent_recovery_r2(noisy @ np.array([[2.0, 1.0], [-1.0, 3.0]]) - 7.0, x, per_latent=True)
    np.testing.assert_allclose(a, b, rtol=1e-10)
    with pytest.raises(ValueError, match="same time"):
        latent_recovery_r2(x[:50], x)
    with pytest.raises(ValueError, match="constant"):
        latent_recovery_r2(x, np.column_stack([x[:, 0], np.ones(100)]))
    with pytest.raises(ValueError, match="finite"):
        latent_recovery_r2(np.where(x > 2, np.nan, x), x)
    with pytest.raises(ValueError, match="more bins"):
        latent_recovery_r2(x[:3], x[:3])
