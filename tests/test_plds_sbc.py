"""Simulation-based calibration of the Poisson LDS latent posterior (Laplace, as in the E-step).

Paths are drawn from the LDS prior and counts from the Poisson emissions; the rank of each true
latent among draws from its Laplace marginal must be uniform. At about one spike per bin and
neuron the Laplace posterior is close to exact, so it passes; the same posterior with its spread
halved (over-confident) is rejected, and so is one shifted by half a standard deviation.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from bayesneuro.latent.plds import PLDSParams, laplace_posterior, simulate_plds
from bayesneuro.sbc import run_sbc

DT, N_TIME, N_NEURON, N_TRIAL = 0.02, 25, 8, 1
BINS = [0, 12, 24]  # latents checked: start, middle, end of the trial
PARAMS = PLDSParams(
    np.zeros(1), np.eye(1), np.array([[0.9]]), np.zeros(1), np.zeros((1, 0)), np.array([[0.19]]),
    np.linspace(-0.6, 0.6, N_NEURON)[:, None], np.full(N_NEURON, np.log(50.0)),
)
JPARAMS = PLDSParams(*(jnp.asarray(v, jnp.float64) for v in PARAMS))
MASK = jnp.ones((N_TRIAL, N_TIME), bool)
INPUTS = jnp.zeros((N_TRIAL, N_TIME, 0))


def simulate(key):
    x, y, _ = simulate_plds(key, PARAMS, n_trials=N_TRIAL, n_time=N_TIME, bin_size=DT)
    return {"latent": x[0, BINS, 0]}, y


def laplace_draws(key, counts, scale=1.0, shift=0.0):
    post = laplace_posterior(JPARAMS, jnp.asarray(counts, jnp.float64), INPUTS, MASK,
                             jnp.zeros((N_TRIAL, N_TIME, 1)), bin_size=DT)
    mean = np.asarray(post.mean)[0, BINS, 0]
    sd = np.sqrt(np.asarray(post.cov)[0, BINS, 0, 0])
    z = np.random.default_rng(np.asarray(key)).normal(size=(99, len(BINS)))
    return {"latent": mean + shift * sd + scale * sd * z}


def test_prior_variance_is_what_the_test_assumes():
    # stationary variance Q / (1 - a^2) = 1, the initial variance: the paths are stationary
    assert PARAMS.dynamics_cov[0, 0] / (1 - PARAMS.dynamics[0, 0] ** 2) == pytest.approx(1.0)


@pytest.mark.slow  # ~25 s: SBC, 300 simulations
def test_laplace_latent_posterior_is_calibrated():
    res = run_sbc(simulate, laplace_draws, key=0, n_sims=300, n_draws=99, progress=False)
    assert res.ranks["latent"].shape == (300, len(BINS))
    assert res.passed, res.pvalues


@pytest.mark.slow  # ~30 s each: SBC, 300 simulations
@pytest.mark.parametrize("wrong", [{"scale": 0.5}, {"shift": 0.5}], ids=["over-confident", "biased"])
def test_wrong_latent_posterior_is_rejected(wrong):
    res = run_sbc(simulate, lambda k, y: laplace_draws(k, y, **wrong), key=0, n_sims=300, n_draws=99,
                  progress=False)
    assert not res.passed, res.pvalues
