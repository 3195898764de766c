"""Poisson GPFA: Laplace latents against a dense numpy log joint, recovery, SVI/NUTS, SBC, bad input."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from scipy.special import gammaln

import bayesneuro as bn
from bayesneuro.diagnostics import ConvergenceWarning
from bayesneuro.latent.gpfa import GPFA
from bayesneuro.latent.gpfa_gaussian import gpfa_kernel
from bayesneuro.latent.gpfa_poisson import (
    PoissonGPFAParams,
    _poisson_left_out,
    _poisson_sample,
    poisson_gpfa_posterior,
)
from bayesneuro.latent.plds import cosmoothing_bits_per_spike
from bayesneuro.sbc import run_sbc

DT = 0.05


def _params(rng, n_neuron, timescales, scale=0.5, rate=(10.0, 30.0)):
    q = len(timescales)
    C = scale * rng.normal(size=(n_neuron, q))
    d = np.log(rng.uniform(*rate, n_neuron))
    return PoissonGPFAParams(jnp.asarray(C), jnp.asarray(d), jnp.asarray(timescales, float), jnp.full(q, 1e-3))


def _dense_prior(p, T, kernel="se"):
    """Block-diagonal prior covariance over latent-major ``(latent * time)`` paths."""
    q = len(p.timescales)
    K = np.zeros((q * T, q * T))
    for i in range(q):
        K[i * T:(i + 1) * T, i * T:(i + 1) * T] = np.asarray(gpfa_kernel(kernel, float(p.timescales[i]), float(p.eps[i]), T))
    return K


def _neg_log_joint(p, y, K, kernel="se"):
    """Negative log joint of one trial in numpy, its gradient and Hessian in latent-major x."""
    C, d = np.asarray(p.loadings), np.asarray(p.offset)
    q, T = C.shape[1], y.shape[0]
    Ki = np.linalg.inv(K)
    _, logdetK = np.linalg.slogdet(K)

    def parts(xf):
        x = xf.reshape(q, T).T  # (time, latent)
        eta = x @ C.T + d + np.log(DT)
        lam = np.exp(eta)
        f = np.sum(lam - y * eta) + np.sum(gammaln(y + 1)) + 0.5 * xf @ Ki @ xf + 0.5 * logdetK \
            + 0.5 * q * T * np.log(2 * np.pi)
        g = ((lam - y) @ C).T.reshape(-1) + Ki @ xf
        W = np.einsum("ni,tn,nj->itj", C, lam, C)[:, :, :, None] * np.eye(T)[None, :, None, :]
        H = W.reshape(q * T, q * T) + Ki
        return f, g, H

    return parts


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    p = _params(rng, 5, [3.0, 6.0])
    _, y = _poisson_sample(jax.random.key(1), p, 2, 12, "se", DT)
    return p, np.asarray(y, float)


def test_laplace_mode_and_covariance_match_dense_log_joint(small):
    p, y = small
    post = poisson_gpfa_posterior(p, y, bin_size=DT)
    q, T = 2, y.shape[1]
    K = _dense_prior(p, T)
    for r in range(y.shape[0]):
        parts = _neg_log_joint(p, y[r], K)
        opt = optimize.minimize(lambda x: parts(x)[:2], np.zeros(q * T), jac=True, method="trust-exact",
                                hess=lambda x: parts(x)[2], options={"gtol": 1e-9})
        assert np.linalg.norm(parts(opt.x)[1]) < 1e-7, opt.message  # |x - x*| <= |g| / lambda_min(H)
        np.testing.assert_allclose(np.asarray(post.mean[r]).T.reshape(-1), opt.x, atol=1e-5)
        f, g, H = parts(opt.x)
        # the explicit Hessian agrees with finite differences of the explicit gradient
        h = 1e-6
        Hn = np.stack([(parts(opt.x + h * e)[1] - parts(opt.x - h * e)[1]) / (2 * h) for e in np.eye(q * T)])
        np.testing.assert_allclose(Hn, H, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(post.cov[r]).reshape(q * T, q * T), np.linalg.inv(H),
                                   rtol=1e-8, atol=1e-10)
        # Laplace evidence: -f(x*) + (qT/2) log 2 pi - log|H| / 2
        lm = -f + 0.5 * q * T * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(H)[1]
        np.testing.assert_allclose(float(post.log_marginal[r]), lm, rtol=1e-9)


def test_neuron_mask_drops_neurons(small):
    p, y = small
    keep = np.array([True, True, False, True, False])
    a = poisson_gpfa_posterior(p, y, bin_size=DT, neuron_mask=keep)
    sub = PoissonGPFAParams(p.loadings[keep], p.offset[keep], p.timescales, p.eps)
    b = poisson_gpfa_posterior(sub, y[:, :, keep], bin_size=DT)
    np.testing.assert_allclose(a.mean, b.mean, atol=1e-10)
    np.testing.assert_allclose(a.cov, b.cov, atol=1e-10)


def _r2_after_linear_map(est, truth):
    X = np.c_[est, np.ones(len(est))]
    beta, *_ = np.linalg.lstsq(X, truth, rcond=None)
    resid = truth - X @ beta
    return 1.0 - resid.var(axis=0) / truth.var(axis=0)


@pytest.mark.slow  # ~40 s: a 3-latent MAP fit
def test_ground_truth_recovery_map():
    """3 latents, 20 neurons, 20 trials x 30 bins: latents, timescales and co-smoothing recovered."""
    N, R, T = 20, 20, 30
    rng = np.random.default_rng(2)
    tau = np.array([3.0, 6.0, 12.0])
    p = _params(rng, N, tau, scale=0.5)
    x, y = _poisson_sample(jax.random.key(3), p, R + 5, T, "se", DT)  # R train, 5 test trials
    x, y = np.asarray(x), np.asarray(y)
    train = bn.SpikeData.from_trials(y[:R], bin_size=DT)
    test = bn.SpikeData.from_trials(y[R:], bin_size=DT)
    # L-BFGS from the coordinate-ascent start, capped at 200 iterations: enough for these checks.
    # Whether the cap is reached depends on the platform's floating point, so a "did not
    # converge" warning is allowed here but not required.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not converge", category=RuntimeWarning)
        model = GPFA(3, observation="poisson", init_timescale=5 * DT).fit(train, method="map", key=0,
                                                                          progress=False, max_iter=200)
    ds = model.transform(train)
    assert ds["mean"].dims == ("time", "latent") and ds["sd"].shape == (R * T, 3)
    assert np.all(ds["sd"].values > 0)
    # orthonormalised latents ordered by variance explained
    assert np.all(np.diff(model.variance_explained_) <= 0)
    np.testing.assert_allclose(model.orthonormal_loadings_.T @ model.orthonormal_loadings_, np.eye(3), atol=1e-10)
    r2 = _r2_after_linear_map(ds["mean"].values, x[:R].reshape(-1, 3))
    assert np.all(r2 > 0.8), r2
    np.testing.assert_allclose(np.sort(model.timescales_ / DT), tau, rtol=0.35)
    # held-out co-smoothing, against the true parameters on the same trials
    score = model.score(test)
    rates = np.asarray(_poisson_left_out(p, jnp.asarray(y[R:], float), DT, "se"))
    truth = cosmoothing_bits_per_spike(y[R:].reshape(-1, N), rates.reshape(-1, N), DT)
    assert truth > 0.05
    assert 0 < score and abs(score - truth) < 0.15 * truth, (score, truth)
    sim = model.simulate(3, 20, key=1)
    assert sim.observations.shape == (3, 20, N) and sim.observations.dtype == np.int64
    assert sim.latents.shape == (3, 20, 3)
    np.testing.assert_array_equal(sim.observations, model.simulate(3, 20, key=1).observations)


@pytest.mark.slow  # ~45 s: a Laplace-EM fit
def test_unequal_trials_match_single_trial_posteriors():
    rng = np.random.default_rng(4)
    p = _params(rng, 8, [4.0])
    _, y = _poisson_sample(jax.random.key(5), p, 4, 20, "se", DT)
    y = np.asarray(y)
    trials = [y[0, :20], y[1, :12], y[2, :20], y[3, :7]]
    data = bn.SpikeData.from_trials(trials, bin_size=DT)
    model = GPFA(1, observation="poisson", init_timescale=4 * DT).fit(data, key=0, progress=False)
    ds = model.transform(data, orthonormal=False)
    assert ds["mean"].shape == (59, 1)
    for k, tr in enumerate(trials):
        one = poisson_gpfa_posterior(model.params_, tr, bin_size=DT)
        got = ds["mean"].values[ds.trial.values == k]
        np.testing.assert_allclose(got, np.asarray(one.mean[0]), atol=1e-8)
    idata = model.to_inference_data()  # MAP: a point fit, no posterior
    assert "posterior" not in idata.groups() and idata.log_likelihood["counts"].dims == ("trial",)
    assert idata.point_estimate["z"].dims == ("trial", "time", "latent")
    assert np.isfinite(model.score(data))


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(6)
    p = _params(rng, 6, [4.0], scale=0.7, rate=(20.0, 40.0))
    _, y = _poisson_sample(jax.random.key(7), p, 3, 15, "se", DT)
    return bn.SpikeData.from_trials(np.asarray(y), bin_size=DT)


def _no_generic_dims(idata):
    for group in idata.groups():
        for name, var in idata[group].data_vars.items():
            assert not any("_dim_" in d for d in var.dims), (group, name, var.dims)


@pytest.mark.filterwarnings(  # short runs (the cap may be reached, depending on the platform)
    "ignore:.*the optimiser did not converge:RuntimeWarning",
    "ignore:svi. the ELBO was still improving:RuntimeWarning")
@pytest.mark.slow  # ~90 s: SVI and NUTS fits
def test_svi_and_nuts_agree_with_laplace(tiny):
    """At a fixed timescale the three posteriors of the paths agree; with learnt timescales,
    Laplace-EM's empirical-Bayes timescale lies within NUTS's posterior of it."""
    kw = dict(observation="poisson", init_timescale=4 * DT)
    lap = GPFA(1, learn_timescales=False, **kw).fit(tiny, method="laplace", key=0, progress=False, num_samples=200)
    svi = GPFA(1, learn_timescales=False, **kw).fit(tiny, method="svi", key=0, progress=False, num_steps=3000,
                                                    learning_rate=0.01, num_samples=400, guide="full-rank")
    with warnings.catch_warnings():
        # one short chain, enough for the comparison below; its split R-hat over hundreds of
        # latents (max 1.055) and ESS (81) are flagged, as they should be (tests/test_diagnostics_everywhere.py)
        warnings.simplefilter("ignore", ConvergenceWarning)
        nuts = GPFA(1, **kw).fit(tiny, method="nuts", key=0, progress=False, num_warmup=300, num_samples=300,
                                 num_chains=1)
    lap_tau = GPFA(1, **kw).fit(tiny, method="laplace", key=0, progress=False, num_samples=50)
    tau_draws = nuts.to_inference_data().posterior["timescale"].values.ravel()
    lo, hi = np.quantile(tau_draws, [0.05, 0.95])
    assert lo < lap_tau.timescales_[0] < hi, (lap_tau.timescales_, lo, hi)
    assert abs(lap_tau.timescales_[0] - 4 * DT) > 1e-6  # learnt, not the start
    ref = lap.transform(tiny)
    for m in (svi, nuts):
        idata = m.to_inference_data()
        _no_generic_dims(idata)
        assert idata.posterior["latents"].dims == ("chain", "draw", "trial", "time", "latent")
        assert idata.log_likelihood["counts"].dims == ("chain", "draw", "trial")
        ds = m.transform(tiny)
        assert ds.attrs["method"] == m.method_
        # Laplace is conditional on point parameters, SVI/NUTS integrate over them: posterior
        # means agree within 0.6 posterior sd on average over bins, 1.5 sd at the worst bin
        z = np.abs(ds["mean"].values - ref["mean"].values) / ref["sd"].values
        assert z.mean() < 0.6 and z.max() < 1.5, (m.method_, z.mean(), z.max())
    _no_generic_dims(lap.to_inference_data())


@pytest.mark.slow  # SBC: 2 x 200 simulations
def test_sbc_of_the_laplace_latent_posterior():
    """Paths drawn from the GP prior; Laplace draws at the true parameters; ranks uniform.

    Negative control: the same draws with their spread halved are rejected.
    """
    rng = np.random.default_rng(8)
    p = _params(rng, 6, [3.0], scale=0.6)
    T = 8

    def simulate(key):
        x, y = _poisson_sample(key, p, 1, T, "se", DT)
        return {"x": np.asarray(x[0, :, 0])}, np.asarray(y, float)

    def posterior(key, y, spread=1.0):
        post = poisson_gpfa_posterior(p, y, bin_size=DT)
        m = np.asarray(post.mean[0, :, 0])
        V = np.asarray(post.cov[0, 0, :, 0, :])
        e = np.random.default_rng(np.asarray(jax.random.key_data(key))).standard_normal((99, T))
        return {"x": m + spread * e @ np.linalg.cholesky(V).T}

    good = run_sbc(simulate, posterior, key=0, n_sims=200, n_draws=99, progress=False)
    assert good.passed, good.pvalues
    bad = run_sbc(simulate, lambda k, y: posterior(k, y, 0.5), key=0, n_sims=200, n_draws=99, progress=False)
    assert not bad.passed, bad.pvalues


def _counts(n_neuron=4, n_trial=3, n_time=10, seed=0):
    return np.random.default_rng(seed).poisson(3.0, (n_trial, n_time, n_neuron))


@pytest.mark.filterwarnings("ignore:neuron 2 has no spikes")
def test_bad_input_names_the_problem():
    y = _counts()
    y[:, :, 2] = 0
    with pytest.raises(ValueError, match=r"neurons \[2\] are silent"):
        GPFA(1, observation="poisson").fit(bn.SpikeData.from_trials(y, bin_size=DT), key=0)
    with pytest.raises(ValueError, match="n_latents=4 must be smaller than the number of neurons"):
        GPFA(4, observation="poisson").fit(bn.SpikeData.from_trials(_counts(), bin_size=DT), key=0)
    short = [_counts(n_trial=1)[0], _counts(n_trial=1, n_time=1)[0]]
    with pytest.raises(ValueError, match=r"trials \[1\] have fewer than 2 bins"):
        GPFA(1, observation="poisson").fit(bn.SpikeData.from_trials(short, bin_size=DT), key=0)
    data = bn.SpikeData.from_trials(_counts(), bin_size=DT)
    with pytest.raises(ValueError, match=r"one of \('em',\) for observation='gaussian', got 'nuts'"):
        GPFA(1).fit(data, method="nuts", key=0)
    with pytest.raises(ValueError, match=r"\('map', 'laplace', 'svi', 'nuts'\) for observation='poisson', got 'em'"):
        GPFA(1, observation="poisson").fit(data, method="em", key=0)
    with pytest.raises(ValueError, match="observation must be one of"):
        GPFA(1, observation="bernoulli")


def test_masked_laplace_equals_unpadded_trials(small):
    """Trials zero-padded to a common length with the padding masked have the Laplace mode,
    covariance and log marginal of the unpadded trials (1e-10)."""
    from bayesneuro.latent.gpfa_poisson import _poisson_laplace

    p, y = small
    w = jnp.ones(5)
    padded = np.zeros((2, 16, 5))
    padded[0, :12], padded[1, :7] = y[0], y[1, :7]
    mask = np.zeros((2, 16))
    mask[0, :12], mask[1, :7] = 1.0, 1.0
    got = _poisson_laplace(p, jnp.asarray(padded), w, DT, "se", mask=jnp.asarray(mask))
    for k, T in enumerate((12, 7)):
        ref = _poisson_laplace(p, jnp.asarray(padded[k:k + 1, :T]), w, DT, "se")
        np.testing.assert_allclose(np.asarray(got.mean[k, :T]), np.asarray(ref.mean[0]), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(got.cov[k][:, :T][:, :, :, :T]), np.asarray(ref.cov[0]), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(float(got.log_marginal[k]), float(ref.log_marginal[0]), rtol=1e-12)


def test_readout_step_structured_hessian_equals_jax_hessian():
    """The read-out M-step's closed-form gradient and Hessian give the Newton path of
    ``jax.grad`` / ``jax.hessian`` of its objective (the dense reference) to 1e-10."""
    from jax import lax

    from bayesneuro.latent.gpfa_poisson import _poisson_expected_readout_step

    rng = np.random.default_rng(3)
    n, q, N = 60, 2, 4
    m = rng.normal(scale=0.5, size=(n, q))
    A = rng.normal(scale=0.2, size=(n, q, q))
    V = A @ np.swapaxes(A, 1, 2) + 0.01 * np.eye(q)
    y = rng.poisson(2.0, size=(n, N)).astype(float)
    valid = (rng.uniform(size=n) > 0.2).astype(float)
    C, d, centre = rng.normal(scale=0.3, size=(N, q)), np.log(rng.uniform(20, 60, N)), np.log(np.full(N, 40.0))
    Cg, dg = _poisson_expected_readout_step(*(jnp.asarray(a) for a in (m, V, y, valid, C, d, centre)), DT)

    X = np.concatenate([m, np.ones((n, 1))], axis=1)
    prior = np.r_[np.ones(q), 0.25]

    def one(w, yn, c):
        target = jnp.concatenate([jnp.zeros(q), c[None]])

        def f(w):
            eta = X @ w + np.log(DT)
            quad = 0.5 * jnp.einsum("i,tij,j->t", w[:q], V, w[:q])
            return jnp.sum(valid * (jnp.exp(eta + quad) - yn * eta)) + 0.5 * jnp.sum(prior * (w - target) ** 2)

        def body(w, _):
            step = -jnp.linalg.solve(jax.hessian(f)(w), jax.grad(f)(w))
            step = step / jnp.maximum(1.0, jnp.linalg.norm(step))
            return jnp.where(f(w + step) <= f(w), w + step, w + 0.1 * step), None

        return lax.scan(body, w, None, length=20)[0]

    ref = jax.vmap(one, in_axes=(0, 1, 0))(jnp.asarray(np.c_[C, d]), jnp.asarray(y), jnp.asarray(centre))
    np.testing.assert_allclose(np.asarray(Cg), np.asarray(ref[:, :q]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dg), np.asarray(ref[:, q]), rtol=1e-10)


@pytest.mark.slow  # ~17 s under load 8 (two Laplace-EM programs compiled)
def test_laplace_em_warm_start_equals_cold_start(small):
    """Laplace-EM starts each sweep's Newton at the previous sweep's modes: the same parameters and
    objective as starting every sweep from zero paths (the old path), to Newton's tolerance."""
    from bayesneuro.engine.em import run_em
    from bayesneuro.latent import gpfa_poisson as P

    p, y = small
    trials = [y[0], y[1, :9]]
    p0 = p._replace(loadings=0.7 * p.loadings, timescales=jnp.array([4.0, 4.0]))
    warm = P.fit_poisson_gpfa_em(p0, trials, bin_size=DT, max_iter=6, tol=None, squarem=False, progress=False,
                                 warn=False)
    groups, _ = P._group(trials, 5)
    buckets = P._buckets(groups, 2)
    step = P._em_step_program("se", True)
    cold_step = jax.jit(lambda s, *a: step(s._replace(paths=P._zero_paths(s.params, buckets)), *a))
    state, trace = run_em(cold_step, P._LaplaceEMState(p0, P._zero_paths(p0, buckets)), buckets,
                          P._centre(groups, None, DT), jnp.asarray(DT), max_iter=6, tol=None, progress=False,
                          warn=False)
    np.testing.assert_allclose(warm.objective, trace.objective, rtol=1e-10)
    for a, b in zip(warm.params, state.params):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-8)  # Newton tolerance


@pytest.mark.slow  # ~20 s: three Laplace-EM programs compiled
def test_laplace_em_modes_blocks_and_squarem():
    """Laplace-EM's parts against independent computations on ragged trials (three lengths, two
    buckets): the returned modes are the Laplace modes at the parameters of the last E-step, trial
    by trial in the order given; the covariance blocks the sweeps use are those of the whole
    posterior covariance; SQUAREM reaches plain sweeps' objective and timescales."""
    from bayesneuro.latent import gpfa_poisson as P

    rng = np.random.default_rng(5)
    p = _params(rng, 6, [3.0, 7.0])
    _, y = _poisson_sample(jax.random.key(6), p, 6, 40, "se", DT)
    y = np.asarray(y, float)
    trials = [y[0, :40], y[1, :12], y[2, :40], y[3, :25], y[4, :12], y[5, :25]]
    p0 = p._replace(loadings=0.6 * p.loadings, timescales=jnp.array([5.0, 5.0]))
    kw = dict(bin_size=DT, tol=None, squarem=False, progress=False, warn=False)
    before = P.fit_poisson_gpfa_em(p0, trials, max_iter=3, **kw)
    fit = P.fit_poisson_gpfa_em(p0, trials, max_iter=4, **kw)
    assert len(fit.modes) == len(trials)
    for k, tr in enumerate(trials):
        post = poisson_gpfa_posterior(before.params, tr, bin_size=DT)
        assert fit.modes[k].shape == (len(tr), 2)
        np.testing.assert_allclose(fit.modes[k], np.asarray(post.mean[0]), atol=1e-8)

    # the blocks: same bin (latent x latent) and same latent (time x time) of the whole covariance
    yb = jnp.asarray(y[:, :25])
    w = jnp.ones(6)
    full = P._poisson_laplace_from(before.params, yb, w, DT, "se")
    V, Pb = P._poisson_laplace_from(before.params, yb, w, DT, "se", blocks=True).cov
    np.testing.assert_allclose(np.asarray(V), np.einsum("ritjt->rtij", np.asarray(full.cov)), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(Pb), np.einsum("ritis->rits", np.asarray(full.cov)), rtol=1e-10, atol=1e-14)

    # SQUAREM against plain sweeps, both stopped by the same rule
    kw.update(tol=1e-7, max_iter=300)
    plain = P.fit_poisson_gpfa_em(p0, trials, **kw)
    fast = P.fit_poisson_gpfa_em(p0, trials, **{**kw, "squarem": True})
    assert fast.n_iter < plain.n_iter / 2, (fast.n_iter, plain.n_iter)  # 30 vs 154 here
    assert abs(fast.objective[-1] - plain.objective[-1]) < 1e-5 * abs(plain.objective[-1])  # 1e-6 here
    np.testing.assert_allclose(np.asarray(fast.params.timescales), np.asarray(plain.params.timescales), rtol=0.01)
