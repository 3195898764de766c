"""Encoding models applied to density models (bayesneuro.joint), checked against references.

- messages: the GPFA messages combined with GPFA's own GP prior give GPFA's exact posterior
  (dense brute force); Poisson messages are the Newton expansion (autodiff reference).
- likelihoods: the Kalman message likelihood equals the dense Gaussian density; the driven-state
  forward algorithm equals enumeration over all state paths; the Poisson-lognormal quadrature
  equals scipy's adaptive integral.
- calibration: over simulations with known encodings, the 90% bands of the uncertainty-carrying
  fits cover the truth at about 90%; the plug-in fits (posterior means taken as data) do not, and
  their bands are narrower (each check can fail).
"""

import itertools

import jax
import numpy as np
import pytest
from scipy import integrate, stats

import bayesneuro as bn
from bayesneuro.joint import (
    LatentDrivenGLM,
    LatentEncoder,
    LatentPosterior,
    StateEncoder,
    StatePosterior,
    driven_state_log_likelihood,
    gaussian_messages,
    latent_posterior,
    message_log_likelihood,
    poisson_lognormal_logpmf,
    poisson_messages,
)
from bayesneuro.latent.gpfa_gaussian import gpfa_kernel

# ---- messages ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpfa_fit():
    rng = np.random.default_rng(0)
    T, N = 30, 8
    t = np.arange(T)
    x = np.sin(2 * np.pi * t / 15.0)[None, :] + 0.3 * rng.normal(size=(6, T))  # (trial, time)
    rate = np.exp(0.8 + 0.6 * x[..., None] * rng.normal(size=(1, 1, N)))
    data = bn.SpikeData.from_trials(rng.poisson(rate), bin_size=0.02)
    return bn.GPFA(2).fit(data, max_iter=500, tol=1e-5, progress=False), data


def test_gpfa_messages_with_its_prior_give_its_posterior(gpfa_fit):
    gpfa, data = gpfa_fit
    post = latent_posterior(gpfa, data, orthonormal=False)
    p = gpfa.params_
    one = np.flatnonzero(data.segment_ids == 0)
    T, L = len(one), gpfa.n_latents
    # dense prior over (latent, time), messages per bin: posterior precision K^-1 + blockdiag(J)
    K = np.zeros((L * T, L * T))
    for k in range(L):
        K[k * T:(k + 1) * T, k * T:(k + 1) * T] = np.asarray(gpfa_kernel(gpfa.kernel, p.timescales[k], p.eps[k], T))
    Jbig = np.zeros_like(K)
    h = np.zeros(L * T)
    for i, t in enumerate(one):
        idx = np.arange(L) * T + i
        Jbig[np.ix_(idx, idx)] = post.message_precision[t]
        h[idx] = post.message_precision[t] @ post.message_mean[t]
    cov = np.linalg.inv(np.linalg.inv(K) + Jbig)
    mean = cov @ h
    np.testing.assert_allclose(mean.reshape(L, T).T, post.mean[one], atol=1e-8)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)).reshape(L, T).T, post.sd[one], atol=1e-8)


def test_orthonormal_messages_are_the_same_information(gpfa_fit):
    gpfa, data = gpfa_fit
    a, b = latent_posterior(gpfa, data, orthonormal=False), latent_posterior(gpfa, data)
    Tm = gpfa.orthonormal_transform_
    np.testing.assert_allclose(a.message_mean @ Tm.T, b.message_mean, atol=1e-10)
    # the quadratic form of the message is basis-free: (z - mu)' J (z - mu) at any z
    z = np.random.default_rng(1).normal(size=a.message_mean.shape)
    qa = np.einsum("ti,tij,tj->t", z - a.message_mean, a.message_precision, z - a.message_mean)
    zb = z @ Tm.T
    qb = np.einsum("ti,tij,tj->t", zb - b.message_mean, b.message_precision, zb - b.message_mean)
    np.testing.assert_allclose(qa, qb, rtol=1e-8)


def test_gaussian_messages_closed_form():
    rng = np.random.default_rng(2)
    C, d, r = rng.normal(size=(6, 2)), rng.normal(size=6), rng.uniform(0.5, 2.0, 6)
    y = rng.normal(size=(4, 6))
    mu, J = gaussian_messages(y, C, d, r)
    # weighted least squares of y - d on C
    W = np.diag(1 / r)
    np.testing.assert_allclose(J, C.T @ W @ C, rtol=1e-12)
    np.testing.assert_allclose(mu, np.linalg.solve(C.T @ W @ C, C.T @ W @ (y - d).T).T, rtol=1e-10)


def test_poisson_messages_are_the_newton_expansion():
    rng = np.random.default_rng(3)
    C, d = rng.normal(size=(7, 2)) * 0.4, rng.normal(size=7)
    x = rng.poisson(2.0, size=(5, 7)).astype(float)
    m = rng.normal(size=(5, 2)) * 0.3
    mu, J = poisson_messages(x, C, d, m)

    def loglik(z, xt):
        eta = C @ z + d
        return jax.numpy.sum(xt * eta - jax.numpy.exp(eta))

    for t in range(5):
        g = np.asarray(jax.grad(loglik)(m[t], x[t]))
        H = -np.asarray(jax.hessian(loglik)(m[t], x[t]))
        np.testing.assert_allclose(J[t], H, rtol=1e-10)
        np.testing.assert_allclose(mu[t], m[t] + np.linalg.solve(H, g), rtol=1e-8)


def test_plds_hmm_and_ensemble_posteriors():
    rng = np.random.default_rng(4)
    counts = rng.poisson(np.exp(0.3 + 0.5 * np.sin(np.arange(240) / 8.0))[:, None] * np.ones((1, 6)))
    data = bn.SpikeData.from_counts(counts, bin_size=0.05)
    plds = bn.PoissonLDS(1).fit(data, max_iter=200, progress=False)
    post = latent_posterior(plds, data)
    assert post.source == "PoissonLDS" and post.message_precision.shape == (240, 1, 1)
    assert np.all(post.message_precision[:, 0, 0] > 0)
    # at the Laplace mode, prior curvature + message curvature = posterior precision; the
    # message's own precision alone is below it
    assert np.all(post.message_precision[:, 0, 0] <= 1 / post.sd[:, 0] ** 2 + 1e-8)
    hmm = bn.density.PoissonHMM(2).fit(data, key=0, progress=False)
    st = latent_posterior(hmm, data)
    ref = stats.poisson.logpmf(counts[:, None, :], hmm.params_.rate[None] * 0.05).sum(axis=2)
    np.testing.assert_allclose(st.log_emission, ref, rtol=1e-8)
    np.testing.assert_allclose(st.probs.sum(axis=1), 1.0, atol=1e-8)
    with pytest.raises(ValueError, match="mixture"):
        latent_posterior(bn.density.Ensembles(method="assemblies").fit(data, key=0), data)
    with pytest.raises(TypeError, match="fitted GPFA"):
        latent_posterior(object(), data)


# ---- likelihoods against dense / brute-force references ------------------------------------


def _ar1_cov(n, rho, sd):
    return sd**2 * rho ** np.abs(np.subtract.outer(np.arange(n), np.arange(n)))


def test_message_likelihood_equals_dense_gaussian():
    rng = np.random.default_rng(1)
    T, L = 12, 2
    seg = np.r_[np.zeros(7, int), np.ones(5, int)]
    starts = np.r_[True, seg[1:] != seg[:-1]]
    A = rng.normal(size=(T, L, L))
    J = A @ A.transpose(0, 2, 1) + 0.3 * np.eye(L)
    rho, sd = np.array([0.7, -0.3]), np.array([1.3, 0.6])
    e = rng.normal(size=(T, L))
    ll = np.asarray(message_log_likelihood(e, J, rho, sd, starts)).sum()
    naive = np.asarray(message_log_likelihood(e, J, rho, sd, starts, naive=True)).sum()
    ref = ref_naive = 0.0
    for s in (0, 1):
        idx = np.flatnonzero(seg == s)
        n = len(idx)
        C = np.zeros((n * L, n * L))
        for k in range(L):
            C[k::L, k::L] = _ar1_cov(n, rho[k], sd[k])
            ref_naive += stats.multivariate_normal(np.zeros(n), _ar1_cov(n, rho[k], sd[k])).logpdf(e[idx, k])
        for i in range(n):
            C[i * L:(i + 1) * L, i * L:(i + 1) * L] += np.linalg.inv(J[idx[i]])
        ref += stats.multivariate_normal(np.zeros(n * L), C).logpdf(e[idx].ravel())
    assert abs(ll - ref) < 1e-6
    assert abs(naive - ref_naive) < 1e-9


def test_driven_state_likelihood_equals_enumeration():
    rng = np.random.default_rng(5)
    T, K = 6, 3
    le = rng.normal(size=(T, K))
    u = rng.normal(size=(T, K))
    P = rng.dirichlet(np.ones(K), size=K)
    pi = rng.dirichlet(np.ones(K))
    starts = np.array([True, False, False, True, False, False])
    ll = np.asarray(driven_state_log_likelihood(le, u, np.log(P), np.log(pi), starts)).sum()
    ref = 0.0
    for block in (range(3), range(3, 6)):
        tot = []
        for path in itertools.product(range(K), repeat=3):
            lp = 0.0
            for i, t in enumerate(block):
                k = path[i]
                w = (pi if i == 0 else P[path[i - 1]]) * np.exp(u[t])
                lp += np.log(w[k] / w.sum()) + le[t, k]
            tot.append(lp)
        ref += np.logaddexp.reduce(tot)
    assert abs(ll - ref) < 1e-10


@pytest.mark.parametrize("y,mean,var", [(0, -1.0, 0.5), (3, 0.5, 0.3), (7, 1.2, 1.0), (1, 0.0, 2.0), (40, 0.0, 3.0), (0, 2.0, 4.0), (0, 10.0, 4.0)])
def test_poisson_lognormal_quadrature(y, mean, var):
    f = lambda eta: stats.poisson.pmf(y, np.exp(eta)) * stats.norm.pdf(eta, mean, np.sqrt(var))
    ref = np.log(integrate.quad(f, mean - 12 * np.sqrt(var), mean + 12 * np.sqrt(var), epsabs=0, epsrel=1e-12,
                                limit=200)[0])
    assert abs(float(poisson_lognormal_logpmf(float(y), mean, var)) - ref) < 1e-6  # skewed integrands: ~3e-7


# ---- calibration over simulations -----------------------------------------------------------


def _encoder_sim(seed, T=300, N=8, w=0.8, a=0.2, rho=0.8, sd=0.6):
    """A latent that encodes a smooth covariate, seen through a Gaussian population (exact messages),
    and the posterior mean a density model would report (a stationary AR prior that ignores s)."""
    rng = np.random.default_rng(seed)
    s = np.convolve(rng.normal(size=T + 20), np.ones(10) / np.sqrt(10), "same")[:T, None]
    r = np.zeros(T)
    r[0] = sd * rng.normal()
    for t in range(1, T):
        r[t] = rho * r[t - 1] + sd * np.sqrt(1 - rho**2) * rng.normal()
    z = a + w * s[:, 0] + r
    C, d = rng.normal(size=(N, 1)) * 0.35, rng.normal(size=N)
    y = z[:, None] @ C.T + d + rng.normal(size=(T, N))
    mu, J = gaussian_messages(y, C, d, np.ones(N))
    K = np.var(z) * 0.9 ** np.abs(np.subtract.outer(np.arange(T), np.arange(T)))
    m0 = mu[:, 0].mean()
    mean = m0 + K @ np.linalg.solve(K + np.eye(T) / J[0, 0], mu[:, 0] - m0)
    return LatentPosterior.from_messages(mu, J, bin_size=0.02, mean=mean[:, None]), s


def test_latent_encoder_bands_are_calibrated_and_the_plug_in_is_not():
    w, n = 0.8, 40
    hits = {"message": 0, "mean": 0}
    width = {"message": [], "mean": []}
    for i in range(n):
        post, s = _encoder_sim(i, w=w)
        for u in hits:
            enc = LatentEncoder(residual="ar1").fit(post, s, method="laplace", uncertainty=u, key=i, progress=False,
                                                    num_samples=500)
            f = enc.filters_.isel(latent=0, feature=0, lag=0)
            hits[u] += float(f.lower) <= w <= float(f.upper)
            width[u].append(float(f.upper - f.lower))
    print(f"LatentEncoder, {n} simulations: 90% bands cover the truth {hits}, mean width "
          f"{ {u: round(float(np.mean(w)), 3) for u, w in width.items()} }")  # shown with pytest -s
    # Binomial(40, 0.9): P(X <= 31) = 0.04
    assert hits["message"] >= 32, hits
    assert hits["mean"] <= 20, hits  # attenuated and too narrow
    assert np.mean(width["mean"]) < 0.5 * np.mean(width["message"])


def _driven_sim(seed, T=600, w=1.0, b=0.5):
    """Source latent N(0, 1) per bin seen by 10 weakly loaded Gaussian neurons (exact posterior)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(T, 1))
    C = np.full((10, 1), 0.3)
    x = z @ C.T + rng.normal(size=(T, 10))
    J = float((C.T @ C)[0, 0])
    mu = (x @ C)[:, 0] / J
    pv = 1 / (1 + J)
    post = LatentPosterior.from_messages(mu[:, None], np.eye(1) * J, bin_size=0.05, mean=(pv * J * mu)[:, None],
                                         sd=np.full((T, 1), np.sqrt(pv)))
    return post, rng.poisson(np.exp(b + w * z))


def test_latent_driven_glm_bands_are_calibrated_and_the_plug_in_is_not():
    w, n = 1.0, 40
    hits = {"posterior": 0, "mean": 0}
    width = {"posterior": [], "mean": []}
    for i in range(n):
        post, y = _driven_sim(i, w=w)
        for u in hits:
            g = LatentDrivenGLM().fit(post, y, method="laplace", uncertainty=u, key=i, progress=False, num_samples=500)
            f = g.filters_.isel(neuron=0, latent=0, lag=0)
            hits[u] += float(f.lower) <= w <= float(f.upper)
            width[u].append(float(f.upper - f.lower))
    print(f"LatentDrivenGLM, {n} simulations: 90% bands cover the truth {hits}, mean width "
          f"{ {u: round(float(np.mean(w)), 3) for u, w in width.items()} }")  # shown with pytest -s
    assert hits["posterior"] >= 32, hits
    assert hits["mean"] <= 28, hits  # overdispersion from the latents' uncertainty is ignored
    assert np.mean(width["mean"]) < np.mean(width["posterior"])


# ---- recovery with bases, leads, states --------------------------------------------------------


def test_encoder_recovers_a_filter_with_lead_on_gpfa_latents():
    """End to end: a latent that ramps before and decays after a press; GPFA fitted without knowing it."""
    rng = np.random.default_rng(6)
    n_trial, T, N, lead = 30, 40, 12, 6
    basis = bn.bases.RaisedCosineLinear(5, window=16)
    kernel = np.exp(-0.5 * ((np.arange(16) - lead - 3) / 3.0) ** 2)  # peaks 3 bins after the press
    press = np.zeros((n_trial, T))
    press[np.arange(n_trial), rng.integers(10, 22, n_trial)] = 1.0
    z = np.stack([np.convolve(p, kernel)[lead:lead + T] for p in press]) * 2.0  # z[t] = sum_k h[k] p[t + lead - k]
    z = z + 0.3 * rng.normal(size=z.shape)
    C = rng.normal(size=(N, 1)) * 0.5
    counts = rng.poisson(np.exp(0.5 + z[..., None] * C[None, None, :, 0]))
    data = bn.SpikeData.from_trials(counts, bin_size=0.02)
    gpfa = bn.GPFA(1).fit(data, max_iter=500, tol=1e-5, progress=False)
    post = latent_posterior(gpfa, data)
    enc = LatentEncoder(basis, lead=lead).fit(post, press.reshape(-1, 1), method="laplace", key=0, progress=False,
                                              num_samples=400)
    h = enc.filters_["mean"].isel(latent=0, feature=0).values
    assert enc.filters_.lag.values[0] == pytest.approx(-lead * 0.02)
    assert abs(np.corrcoef(h, kernel)[0, 1]) > 0.9
    assert enc.evaluate(post, press.reshape(-1, 1))["r2"][0] > 0.3
    # held-out: a model with the press beats one with a shuffled covariate
    shuffled = press[rng.permutation(n_trial)].reshape(-1, 1)
    null = LatentEncoder(basis, lead=lead).fit(post, shuffled, method="map", progress=False)
    assert enc.score(post, press.reshape(-1, 1)) > null.score(post, shuffled)
    idata = enc.to_inference_data()
    assert idata.log_likelihood["messages"].dims[-1] == "time"


def test_state_encoder_recovers_input_driven_switching():
    rng = np.random.default_rng(7)
    T = 1500
    s = rng.normal(size=(T, 1))
    P = np.array([[0.9, 0.1], [0.1, 0.9]])
    w = 1.5
    states = np.zeros(T, int)
    for t in range(1, T):
        p = P[states[t - 1]] * np.exp(np.array([0.0, w * s[t, 0]]))
        states[t] = rng.random() < p[1] / p.sum()
    rates = np.array([[1.0, 3.0, 0.5], [3.0, 1.0, 2.0]])
    counts = rng.poisson(rates[states])
    le = stats.poisson.logpmf(counts[:, None, :], rates[None]).sum(axis=2)
    probs = np.exp(le - np.logaddexp.reduce(le, axis=1, keepdims=True))
    post = StatePosterior(probs, le, P, np.full(2, 0.5), 0.05, None, np.arange(T) * 0.05)
    enc = StateEncoder().fit(post, s, method="laplace", key=0, progress=False, num_samples=400)
    f = enc.filters_.sel(hidden_state=1).isel(feature=0, lag=0)
    assert float(f.lower) <= w <= float(f.upper)
    plug = StateEncoder().fit(post, s, method="laplace", uncertainty="mode", key=0, progress=False, num_samples=400)
    assert float(plug.filters_["mean"].sel(hidden_state=1).item()) < float(f["mean"])  # misclassified bins attenuate
    assert enc.score(post, s) > StateEncoder().fit(post, rng.normal(size=(T, 1)), method="map",
                                                   progress=False).score(post, s)


# ---- contract and errors ----------------------------------------------------------------------


def test_errors_name_the_problem():
    post = LatentPosterior.from_messages(np.zeros((10, 1)), np.eye(1), bin_size=0.1, sd=np.ones((10, 1)))
    with pytest.raises(ValueError, match="aligned"):
        LatentEncoder().fit(post, np.zeros((9, 1)), key=0)
    with pytest.raises(ValueError, match="NaN"):
        LatentEncoder().fit(post, np.full((10, 1), np.nan), key=0)
    with pytest.raises(TypeError, match="key"):
        LatentEncoder().fit(post, np.zeros((10, 1)), method="laplace")
    with pytest.raises(ValueError, match="residual"):
        LatentEncoder(residual="gp").fit(post, np.zeros((10, 1)), key=0)
    with pytest.raises(ValueError, match="lead"):
        LatentEncoder(lead=-1).fit(post, np.zeros((10, 1)), key=0)
    with pytest.raises(ValueError, match="non-negative integers"):
        LatentDrivenGLM().fit(post, np.full((10, 1), 1.5), key=0)
    with pytest.raises(ValueError, match="no spikes"):
        LatentDrivenGLM().fit(post, np.zeros((10, 1)), key=0)
    with pytest.raises(ValueError, match="message_precision"):
        LatentPosterior.from_messages(np.zeros((10, 2)), np.eye(3), bin_size=0.1)
    with pytest.raises(ValueError, match="NaN"):
        LatentPosterior.from_messages(np.full((10, 1), np.nan), np.eye(1), bin_size=0.1)
    with pytest.raises(RuntimeError):
        LatentEncoder().score(post, np.zeros((10, 1)))


def test_clone_same_key_same_result_and_split():
    from sklearn.base import clone

    post, s = _encoder_sim(0, T=120)
    enc = LatentEncoder(bn.bases.RaisedCosineLinear(3, window=6), lead=2, residual="iid")
    assert clone(enc).get_params() == enc.get_params()
    a = clone(enc).fit(post[:80], s[:80], key=3, progress=False, num_samples=100)
    b = clone(enc).fit(post[:80], s[:80], key=3, progress=False, num_samples=100)
    np.testing.assert_array_equal(a.filters_["lower"].values, b.filters_["lower"].values)
    assert isinstance(a.score(post[80:], s[80:]), float)
    assert a.log_likelihood(post[80:], s[80:]).shape == (40,)


def test_ensemble_mixture_messages_are_the_newton_expansion_of_its_members():
    rng = np.random.default_rng(8)
    T = 400
    drive = rng.normal(size=(T, 2))
    loads = np.zeros((2, 10))
    loads[0, :5], loads[1, 5:] = 0.8, 0.8
    counts = rng.poisson(np.exp(0.2 + drive @ loads))
    data = bn.SpikeData.from_counts(counts, bin_size=0.02)
    ens = bn.density.Ensembles(method="mixture", n_ensembles=2).fit(data, key=0, progress=False)
    post = latent_posterior(ens, data)
    d = ens.detail_
    assert post.source == "Ensembles" and post.message_mean.shape == (T, 2)
    np.testing.assert_allclose(post.mean, np.asarray(ens.transform(data)), rtol=1e-12)
    for k in range(2):
        m = ens.labels_ == k

        def loglik(f, xt, m=m, k=k):
            return jax.numpy.sum(xt * (d.offset[m] + f * d.loadings[k, m]) - jax.numpy.exp(d.offset[m] + f * d.loadings[k, m]))

        for t in (0, 17, 311):
            f0 = post.mean[t, k]
            g, H = jax.grad(loglik)(f0, counts[t, m]), -jax.hessian(loglik)(f0, counts[t, m])
            assert post.message_precision[t, k, k] == pytest.approx(float(H), rel=1e-10)
            assert post.message_mean[t, k] == pytest.approx(f0 + float(g) / float(H), rel=1e-8, abs=1e-10)
    assert np.all(post.message_precision[:, 0, 1] == 0)  # a neuron belongs to one ensemble
    # the drives follow the planted ones (up to order and sign)
    c = np.corrcoef(post.mean.T, drive.T)[:2, 2:]
    assert np.all(np.abs(c).max(axis=1) > 0.8)


def test_latent_driven_glm_with_history_equals_statsmodels_when_the_latents_are_known():
    """Zero posterior variance: the model is a Poisson GLM on the basis-convolved latents and the own
    history; MAP under flat-ish priors equals statsmodels' unpenalised fit on the same design."""
    import statsmodels.api as sm

    rng = np.random.default_rng(9)
    T = 4000
    seg = np.arange(T) // 1000
    z = np.zeros((T, 2))
    for t in range(1, T):
        z[t] = 0.9 * z[t - 1] + 0.45 * rng.normal(size=2)
    basis = bn.bases.RaisedCosineLinear(3, window=6)
    hist = bn.bases.RaisedCosineLog(2, window=8, first_peak=0.0)
    y = np.zeros((T, 2))
    for t in range(T):
        lam = np.exp(-0.5 + np.array([0.6, -0.4]) * z[t, 0] + np.array([0.2, 0.5]) * z[t, 1]
                     - 1.5 * (y[t - 1] if t % 1000 else 0))
        y[t] = rng.poisson(lam)
    src = LatentPosterior.from_messages(z, np.eye(2), bin_size=0.01, mean=z, sd=np.zeros((T, 2)), segment_ids=seg)
    glm = LatentDrivenGLM(basis, lead=2, history_basis=hist, prior_scale=1e4).fit(src, y, method="map", progress=False,
                                                                               tol=1e-10)
    from bayesneuro.joint import _design

    Xz = _design.features(z, basis, 2, seg).reshape(T, -1)  # (time, latent * basis)
    Xh = np.asarray(bn.bases.convolve(y, hist, history=True, trial_ids=seg))  # (time, neuron, basis)
    for n in range(2):
        X = np.column_stack([np.ones(T), Xz, Xh[:, n]])
        ref = sm.GLM(y[:, n], X, family=sm.families.Poisson()).fit(tol=1e-12).params
        ours = np.r_[glm.bias_[n], glm.weights_[:, :, n].ravel(), glm.history_weights_[:, n]]
        np.testing.assert_allclose(ours, ref, atol=2e-5)  # measured 1e-6 (the N(., 10) bias prior)
    assert glm.history_filters_["mean"].dims == ("neuron", "history_lag")
    assert glm.log_likelihood(src, y).shape == (T,)


def test_float32_likelihoods_stay_within_stated_errors():
    """GPU users keep float32: the three likelihoods in float32 against float64 (stated in docs/joint.md)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    T, L = 2000, 3
    A = rng.normal(size=(T, L, L))
    J = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(L)
    e, rho, sd = rng.normal(size=(T, L)), np.array([0.95, 0.5, -0.2]), np.array([1.0, 0.5, 2.0])
    starts = np.zeros(T, bool)
    starts[::500] = True

    def both(fn, *arrays, **kw):
        out = [np.asarray(fn(*(jnp.asarray(a, dt) for a in arrays), **kw), float) for dt in (jnp.float64, jnp.float32)]
        assert jnp.asarray(fn(*(jnp.asarray(a, jnp.float32) for a in arrays), **kw)).dtype == jnp.float32
        return out

    a, b = both(lambda *x: message_log_likelihood(*x, jnp.asarray(starts)), e, J, rho, sd)
    assert np.abs(a - b).max() < 2e-5  # measured 6e-6 nats per bin
    y = rng.poisson(3, size=5000).astype(float)
    a, b = both(poisson_lognormal_logpmf, y, rng.normal(size=5000), rng.uniform(0, 3, 5000))
    assert np.abs(a - b).max() < 1e-5  # measured 4e-6
    P = rng.dirichlet(np.ones(3), 3)
    a, b = both(lambda *x: driven_state_log_likelihood(*x, jnp.asarray(starts)), 5 * rng.normal(size=(T, 3)),
                rng.normal(size=(T, 3)), np.log(P), np.log(np.ones(3) / 3))
    assert np.abs(a - b).max() < 5e-6  # measured 1.3e-6


def test_latent_driven_glm_lagged_variances_by_direct_loop():
    """var_features[t, l, k] = s^2 at bin t + lead - k of the same segment (0 outside it)."""
    rng = np.random.default_rng(10)
    T, lead, window = 30, 2, 5
    seg = np.arange(T) // 12
    sd = rng.uniform(0.1, 1.0, size=(T, 2))
    src = LatentPosterior.from_messages(rng.normal(size=(T, 2)), np.eye(2), bin_size=0.01, sd=sd, segment_ids=seg)
    _, var = LatentDrivenGLM(bn.bases.RaisedCosineLinear(3, window=window), lead=lead)._features(src, naive=False)
    ref = np.zeros((T, 2, window))
    for t in range(T):
        for k in range(window):
            u = t + lead - k
            if 0 <= u < T and seg[u] == seg[t]:
                ref[t, :, k] = sd[u] ** 2
    np.testing.assert_array_equal(var, ref)
