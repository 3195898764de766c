"""Simulation-based calibration: correct posteriors pass, wrong ones are rejected."""

import numpy as np
import pytest

from bayesneuro.sbc import fit_posterior, prior_simulator, rank_uniformity_pvalue, run_sbc

from .helpers import load_gallery

gp = load_gallery("gamma_poisson_hierarchical")
DURATION, N_TRIAL, N_NEURON = 0.5, 20, 3
SHAPE, RATE = 2.0, 0.2


def _rng(key):
    return np.random.default_rng(np.asarray(key))


def simulate(key):
    rng = _rng(key)
    lam = rng.gamma(SHAPE, 1.0 / RATE, size=N_NEURON)
    return {"rate": lam}, rng.poisson(lam * DURATION, size=(N_TRIAL, N_NEURON))


def exact_posterior(key, counts, scale=1.0, shift=0.0):
    """Exact Gamma posterior draws; ``scale`` != 1 or ``shift`` != 0 make it wrong on purpose."""
    a, b = gp.conjugate_posterior(counts, duration=DURATION, shape=SHAPE, rate=RATE)
    draws = _rng(key).gamma(a, 1.0 / b, size=(199, N_NEURON))
    mean = a / b
    return {"rate": mean + shift * np.sqrt(a) / b + scale * (draws - mean)}


def test_rank_pvalue_against_known_cases():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 100, size=(2000, 3))
    assert np.all(rank_uniformity_pvalue(uniform, 99) > 1e-3)
    piled = np.concatenate([np.zeros((300, 3), int), np.full((300, 3), 99)])
    assert np.all(rank_uniformity_pvalue(piled, 99) < 1e-10)


def test_exact_posterior_passes():
    res = run_sbc(simulate, exact_posterior, key=0, n_sims=400, n_draws=99, progress=False)
    assert res.ranks["rate"].shape == (400, N_NEURON)
    assert res.ranks["rate"].min() >= 0 and res.ranks["rate"].max() <= 99
    assert res.passed, res.pvalues


@pytest.mark.parametrize(
    "wrong", [{"scale": 0.5}, {"scale": 2.0}, {"shift": 0.7}], ids=["too-narrow", "too-wide", "biased"]
)
def test_wrong_posterior_is_rejected(wrong):
    res = run_sbc(
        simulate, lambda k, c: exact_posterior(k, c, **wrong), key=0, n_sims=400, n_draws=99,
        progress=False,
    )
    assert not res.passed, res.pvalues


def test_same_key_same_ranks():
    a = run_sbc(simulate, exact_posterior, key=3, n_sims=20, n_draws=19, progress=False)
    b = run_sbc(simulate, exact_posterior, key=3, n_sims=20, n_draws=19, progress=False)
    np.testing.assert_array_equal(a.ranks["rate"], b.ranks["rate"])


def test_too_few_draws_is_an_error():
    with pytest.raises(ValueError, match="need at least n_draws=500"):
        run_sbc(simulate, exact_posterior, key=0, n_sims=10, n_draws=500, progress=False)


@pytest.mark.slow  # SBC: ~20 s of Laplace fits
def test_laplace_through_the_inference_layer_is_calibrated():
    """SBC of the shared layer's Laplace fit on the conjugate model, with a negative control."""
    simulate_model = prior_simulator(
        gp.conjugate_rates, obs="counts", duration=DURATION, n_trial=N_TRIAL, n_neuron=N_NEURON
    )
    laplace = fit_posterior(gp.conjugate_rates, method="laplace", num_samples=99)
    res = run_sbc(simulate_model, laplace, key=1, n_sims=100, n_draws=99, progress=False)
    assert res.passed, res.pvalues

    def overconfident(key, data):  # the same fit with its spread halved
        draws = laplace(key, data)["rate"]
        return {"rate": draws.mean(0) + 0.5 * (draws - draws.mean(0))}

    bad = run_sbc(simulate_model, overconfident, key=1, n_sims=100, n_draws=99, progress=False)
    assert not bad.passed, bad.pvalues


def test_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    res = run_sbc(simulate, exact_posterior, key=0, n_sims=50, n_draws=99, progress=False)
    axes = res.plot()
    axes[0].figure.savefig(tmp_path / "sbc.png")
    assert (tmp_path / "sbc.png").stat().st_size > 0
