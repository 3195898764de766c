"""Gaussian LDS: filter and smoother against dense joint-Gaussian conditioning, sampling, EM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from bayesneuro.latent.kalman import (
    LDSParams,
    fit_lds_em,
    init_lds_params,
    kalman_filter,
    kalman_smoother,
    lds_em_step,
    lds_log_likelihood,
    lds_sample,
    make_lds_params,
)

N_TIME, N_LATENT, N_NEURON, N_FEATURE = 6, 2, 3, 2


def _pd(rng, n, scale=1.0):
    M = rng.normal(size=(n, n))
    return scale * (M @ M.T / n + 0.5 * np.eye(n))


def random_params(seed, *, full_R, inputs):
    rng = np.random.default_rng(seed)
    L, N, F = N_LATENT, N_NEURON, N_FEATURE
    A = rng.normal(size=(L, L))
    A = 0.9 * A / np.max(np.abs(np.linalg.eigvals(A)))
    return make_lds_params(
        A,
        rng.normal(size=(N, L)),
        dynamics_cov=_pd(rng, L, 0.3),
        observation_cov=_pd(rng, N, 0.5) if full_R else rng.uniform(0.2, 1.0, N),
        initial_mean=rng.normal(size=L),
        initial_cov=_pd(rng, L),
        dynamics_bias=rng.normal(size=L),
        offset=rng.normal(size=N),
        input_weights=rng.normal(size=(L, F)) if inputs else None,
        observation_input_weights=rng.normal(size=(N, F)) if inputs else None,
    )


def dense_joint(p: LDSParams, u):
    """Mean and covariance of the stacked ``(x_0..x_{T-1})`` and ``(y_0..y_{T-1})``, built densely."""
    p = jax.tree.map(np.asarray, p)
    T, L, N = u.shape[0], N_LATENT, N_NEURON
    mx = [p.initial_mean]
    for t in range(1, T):
        drive = p.input_weights @ u[t] if p.input_weights is not None else 0.0
        mx.append(p.dynamics @ mx[-1] + drive + p.dynamics_bias)
    mx = np.concatenate(mx)
    G = np.zeros((T * L, T * L))  # x = mean + G @ (x_0 - m_0, w_1, ..., w_{T-1})
    for t in range(T):
        for s in range(t + 1):
            G[t * L : (t + 1) * L, s * L : (s + 1) * L] = np.linalg.matrix_power(p.dynamics, t - s)
    noise = np.zeros((T * L, T * L))
    for t in range(T):
        noise[t * L : (t + 1) * L, t * L : (t + 1) * L] = p.initial_cov if t == 0 else p.dynamics_cov
    Sx = G @ noise @ G.T
    Cb = np.kron(np.eye(T), p.loadings)
    R = np.diag(p.observation_cov) if p.observation_cov.ndim == 1 else p.observation_cov
    drive = u @ p.observation_input_weights.T if p.observation_input_weights is not None else np.zeros((T, N))
    my = Cb @ mx + (drive + p.offset).reshape(-1)
    return mx, my, Sx, Sx @ Cb.T, Cb @ Sx @ Cb.T + np.kron(np.eye(T), R)


def dense_sample(rng, joint):
    """Emissions ``(time, neuron)`` drawn from the dense joint."""
    _, my, _, _, Syy = joint
    return (my + np.linalg.cholesky(Syy) @ rng.normal(size=my.shape)).reshape(-1, N_NEURON)


def condition(joint, y, bins):
    """Posterior mean and covariance of all latents given ``y`` at ``bins``, and log p(y[bins])."""
    mx, my, Sx, Sxy, Syy = joint
    if len(bins) == 0:
        return mx, Sx, 0.0
    o = np.concatenate([np.arange(b * N_NEURON, (b + 1) * N_NEURON) for b in bins])
    K = np.linalg.solve(Syy[np.ix_(o, o)], Sxy[:, o].T).T
    mean = mx + K @ (y.reshape(-1)[o] - my[o])
    cov = Sx - K @ Sxy[:, o].T
    return mean, cov, multivariate_normal.logpdf(y.reshape(-1)[o], my[o], Syy[np.ix_(o, o)])


def block(v, t, s=None):
    L = N_LATENT
    if s is None:
        return v[t * L : (t + 1) * L]
    return v[t * L : (t + 1) * L, s * L : (s + 1) * L]


CASES = [  # (full_R, inputs, masked bins): every option seen both ways
    (False, False, ()),
    (True, True, (2,)),
    (False, True, (0, 4)),
    (True, False, (5,)),
]


@pytest.mark.parametrize("full_R, with_inputs, missing", CASES)
def test_filter_and_smoother_match_dense_conditioning(full_R, with_inputs, missing):
    p = random_params(1, full_R=full_R, inputs=with_inputs)
    rng = np.random.default_rng(2)
    u = rng.normal(size=(N_TIME, N_FEATURE)) if with_inputs else np.zeros((N_TIME, 0))
    joint = dense_joint(p, u)
    y = dense_sample(rng, joint)
    mask = np.ones(N_TIME, bool)
    mask[list(missing)] = False
    y[~mask] = np.nan  # ignored where masked
    kwargs = dict(inputs=u if with_inputs else None, mask=mask)
    observed = np.flatnonzero(mask)

    filt = kalman_filter(p, y, **kwargs)
    for t in range(N_TIME):
        mean, cov, _ = condition(joint, y, observed[observed <= t])
        np.testing.assert_allclose(filt.filtered_means[t], block(mean, t), atol=1e-8)
        np.testing.assert_allclose(filt.filtered_covs[t], block(cov, t, t), atol=1e-8)
        mean, cov, _ = condition(joint, y, observed[observed < t])
        np.testing.assert_allclose(filt.predicted_means[t], block(mean, t), atol=1e-8)
        np.testing.assert_allclose(filt.predicted_covs[t], block(cov, t, t), atol=1e-8)

    post = kalman_smoother(p, y, **kwargs)
    mean, cov, ll = condition(joint, y, observed)
    for t in range(N_TIME):
        np.testing.assert_allclose(post.smoothed_means[t], block(mean, t), atol=1e-8)
        np.testing.assert_allclose(post.smoothed_covs[t], block(cov, t, t), atol=1e-8)
    for t in range(N_TIME - 1):  # convention: Cov(x_{t+1}, x_t | y)
        np.testing.assert_allclose(post.smoothed_cross_covs[t], block(cov, t + 1, t), atol=1e-8)
    np.testing.assert_allclose(filt.log_likelihood, ll, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(post.log_likelihood, ll, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(lds_log_likelihood(p, y, **kwargs), ll, rtol=1e-10, atol=1e-8)


def test_single_bin_and_all_masked():
    p = random_params(4, full_R=False, inputs=False)
    y = np.random.default_rng(0).normal(size=(1, N_NEURON))
    post = kalman_smoother(p, y)
    assert post.smoothed_cross_covs.shape == (0, N_LATENT, N_LATENT)
    mean, cov, ll = condition(dense_joint(p, np.zeros((1, 0))), y, [0])
    np.testing.assert_allclose(post.smoothed_means[0], mean, atol=1e-10)
    np.testing.assert_allclose(post.log_likelihood, ll, rtol=1e-12)
    none = kalman_smoother(p, np.full((1, N_NEURON), np.nan), mask=np.zeros(1, bool))
    assert float(none.log_likelihood) == 0.0
    np.testing.assert_allclose(none.smoothed_means[0], p.initial_mean)
    np.testing.assert_allclose(none.smoothed_covs[0], p.initial_cov)


def test_jit_and_grad_through_log_likelihood():
    p = random_params(1, full_R=False, inputs=False)
    y = dense_sample(np.random.default_rng(3), dense_joint(p, np.zeros((N_TIME, 0))))
    f = lambda A: lds_log_likelihood(p._replace(dynamics=A), y)  # noqa: E731
    value, g = jax.jit(jax.value_and_grad(f))(p.dynamics)  # the validating wrapper accepts tracers
    np.testing.assert_allclose(value, f(p.dynamics), rtol=1e-12)
    eps = 1e-6
    E = jnp.zeros_like(p.dynamics).at[0, 1].set(eps)
    np.testing.assert_allclose(g[0, 1], (f(p.dynamics + E) - f(p.dynamics - E)) / (2 * eps), rtol=1e-6)


def test_sample_same_key_same_draw_and_matches_moments():
    p = random_params(6, full_R=True, inputs=True)
    u = np.random.default_rng(0).normal(size=(3, N_FEATURE))
    x1, y1 = lds_sample(jax.random.key(7), p, 3, inputs=u)
    x2, y2 = lds_sample(jax.random.key(7), p, 3, inputs=u)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(y1, lds_sample(jax.random.key(8), p, 3, inputs=u)[1])
    # Monte Carlo: every observation mean within 5 standard errors of the dense mean
    n = 4000
    ys = jax.vmap(lambda k: lds_sample(k, p, 3, inputs=u)[1])(jax.random.split(jax.random.key(9), n))
    _, my, _, _, Syy = dense_joint(p, u)
    se = np.sqrt(np.diag(Syy) / n)
    assert np.all(np.abs(np.asarray(ys).reshape(n, -1).mean(0) - my) < 5 * se)


# ----------------------------------------------------------------------------- EM


@pytest.mark.slow  # ~9 s: Gaussian LDS EM
def test_em_log_likelihood_never_decreases():
    # full R, inputs, a masked bin, and trials of two lengths (two vmapped groups)
    p = random_params(10, full_R=True, inputs=True)
    rng = np.random.default_rng(11)
    lengths = (30, 30, 45)
    u = rng.normal(size=(sum(lengths), N_FEATURE))
    y = np.asarray(lds_sample(jax.random.key(12), p, sum(lengths), inputs=u)[1])
    cuts = np.cumsum(lengths)[:-1]
    ys, us = np.split(y, cuts), np.split(u, cuts)
    masks = [np.ones(n, bool) for n in lengths]
    masks[2][[3, 20]] = False
    data = dict(inputs=us, mask=masks)
    start = init_lds_params(ys, N_LATENT, diagonal_observation_cov=False, **data)
    fit = fit_lds_em(start, ys, max_iter=15, progress=False, **data)
    lls = fit.log_likelihoods
    assert lls.shape == (16,) and not fit.converged
    assert np.all(np.diff(lls) >= -1e-9 * np.abs(lls[1:])), np.diff(lls)
    np.testing.assert_allclose(lds_em_step(fit.params, ys, **data)[1], lls[-1], rtol=1e-12)
    # held parameters stay put, and the step still raises the likelihood
    fixed = ("offset", "dynamics_cov", "input_weights")
    new, ll0 = lds_em_step(start, ys, fixed=fixed, **data)
    for name in fixed:
        np.testing.assert_array_equal(getattr(new, name), getattr(start, name))
    assert not np.allclose(new.observation_input_weights, start.observation_input_weights)
    assert lds_em_step(new, ys, fixed=fixed, **data)[1] >= ll0


@pytest.mark.slow  # ~5 s: Gaussian LDS EM
def test_em_recovers_dynamics_and_held_out_likelihood():
    rot = 0.15
    true = make_lds_params(
        0.95 * np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]]),
        np.random.default_rng(20).normal(size=(6, 2)),
        dynamics_cov=0.1 * np.eye(2),
        observation_cov=np.full(6, 0.3),
        offset=np.linspace(-1, 1, 6),
    )
    keys = jax.random.split(jax.random.key(21), 20)
    Y = jax.vmap(lambda k: lds_sample(k, true, 150)[1])(keys)  # (trial, time, neuron)
    train, test = Y[:10], Y[10:]
    fit = fit_lds_em(init_lds_params(train, 2), train, max_iter=300, tol=1e-8, progress=False)
    lls = fit.log_likelihoods
    assert fit.converged and len(lls) < 300
    assert np.all(np.diff(lls) >= -1e-9 * np.abs(lls[1:]))
    assert fit.params.observation_cov.shape == (6,)  # a diagonal R stays diagonal
    held = lambda q, data: sum(float(lds_log_likelihood(q, y)) for y in data)  # noqa: E731
    np.testing.assert_allclose(held(fit.params, train), lls[-1], rtol=1e-10)
    # the MLE beats the truth on its own training data
    assert lls[-1] > held(true, train)
    # held-out deficit of an MLE, test set as large as the training set: chi2_k / 2 from the
    # estimation error plus a test-sample fluctuation of variance ~k, with k = 34 free parameters
    # (m0 2, S0 3, A 4, b 2, Q 3, C 12, d 6, R 6) - 4 (similarity transform of the latents) = 30:
    # mean 15, sd sqrt(1.5 k) = 6.7 (20 seeds: mean 17.8, sd 7.5); allow 5 sd either side
    k = 30
    gap = held(true, test) - held(fit.params, test)
    assert abs(gap - k / 2) < 5 * np.sqrt(1.5 * k), gap
    # eigenvalues of A are invariant to the similarity transform; rms error over 20 seeds 0.009
    eig_true = np.sort_complex(np.linalg.eigvals(np.asarray(true.dynamics)))
    eig_fit = np.sort_complex(np.linalg.eigvals(np.asarray(fit.params.dynamics)))
    np.testing.assert_allclose(eig_fit, eig_true, atol=5 * 0.009)


def _reference_em_step(p: LDSParams, ys, us, masks):
    """One EM step in numpy from dense joint-Gaussian conditioning of every trial (no Kalman
    recursions): the smoothed moments exactly, then the closed-form M-step (full R, inputs)."""
    p = jax.tree.map(np.asarray, p)
    L = N_LATENT
    sums = {k: 0 for k in ("xx", "xz", "zz", "n", "yy", "yz", "ezz", "en", "x0", "x0x0")}
    ll = 0.0
    for y, u, m in zip(ys, us, masks):
        T = y.shape[0]
        joint = dense_joint(p, u)
        mean, cov, lp = condition(joint, y, np.flatnonzero(m))
        ll += lp
        mu = mean.reshape(T, L)
        S = [block(cov, t, t) for t in range(T)]
        for t in range(T):
            z = np.r_[mu[t], u[t], 1.0]
            Ez = np.outer(z, z)
            Ez[:L, :L] += S[t]
            if m[t]:
                sums["yy"] = sums["yy"] + np.outer(y[t], y[t])
                sums["yz"] = sums["yz"] + np.outer(y[t], z)
                sums["ezz"] = sums["ezz"] + Ez
                sums["en"] += 1
            if t >= 1:
                zd = np.r_[mu[t - 1], u[t], 1.0]
                Ezd = np.outer(zd, zd)
                Ezd[:L, :L] += S[t - 1]
                xz = np.outer(mu[t], zd)
                xz[:, :L] += block(cov, t, t - 1)
                sums["xx"] = sums["xx"] + np.outer(mu[t], mu[t]) + S[t]
                sums["xz"] = sums["xz"] + xz
                sums["zz"] = sums["zz"] + Ezd
                sums["n"] += 1
        sums["x0"] = sums["x0"] + mu[0]
        sums["x0x0"] = sums["x0x0"] + np.outer(mu[0], mu[0]) + S[0]
    Wd = sums["xz"] @ np.linalg.inv(sums["zz"])
    Q = (sums["xx"] - Wd @ sums["xz"].T) / sums["n"]
    We = sums["yz"] @ np.linalg.inv(sums["ezz"])
    R = (sums["yy"] - We @ sums["yz"].T) / sums["en"]
    n = len(ys)
    m0 = sums["x0"] / n
    new = LDSParams(
        m0, sums["x0x0"] / n - np.outer(m0, m0), Wd[:, :L], Wd[:, -1], Wd[:, L:-1], We[:, :L], We[:, -1],
        We[:, L:-1], 0.5 * (Q + Q.T), 0.5 * (R + R.T),
    )
    return new, ll


def test_em_steps_match_dense_reference_on_ragged_bucketed_trials():
    # trials of 6, 5 and 3 bins (one time bucket, 3 trials padded in time), full R, inputs, masked
    # bins: three EM steps of the one-program EM against a dense numpy reference
    p = random_params(30, full_R=True, inputs=True)
    rng = np.random.default_rng(31)
    lengths = (6, 5, 3)
    us = [rng.normal(size=(T, N_FEATURE)) for T in lengths]
    ys = [dense_sample(rng, dense_joint(p, u)) for u in us]
    masks = [np.ones(T, bool) for T in lengths]
    masks[1][[0, 3]] = False
    ys[1][~masks[1]] = np.nan
    ref, ref_lls = p, []
    for _ in range(3):
        ref, ll = _reference_em_step(ref, ys, us, masks)
        ref_lls.append(ll)
    fit = fit_lds_em(p, ys, inputs=us, mask=masks, max_iter=3, progress=False)
    np.testing.assert_allclose(fit.log_likelihoods[:3], ref_lls, rtol=1e-10, atol=1e-8)
    for name, a, b in zip(LDSParams._fields, fit.params, ref):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8, err_msg=name)
    _, ll = lds_em_step(p, ys, inputs=us, mask=masks)
    np.testing.assert_allclose(ll, ref_lls[0], rtol=1e-10)


def _per_trial_stats(params, observations, inputs, masks, live):
    """Reference for the EM statistics: one whole Kalman smoother per trial, summed (what the
    EM step computed before its covariances were shared by trials of one pattern)."""
    from bayesneuro.latent import kalman as K

    def one(observations, inputs, mask, live):
        post = K._smoother(params, observations, inputs, mask, live)
        m, P, X = post.smoothed_means, post.smoothed_covs, post.smoothed_cross_covs
        n_time, n_latent = m.shape
        w = (mask & live).astype(m.dtype)
        wl = live[1:].astype(m.dtype)  # transition t-1 -> t exists
        tw = live[0].astype(m.dtype)
        y = jnp.where((mask & live)[:, None], observations, 0.0)
        ones = jnp.ones((n_time, 1), m.dtype)
        z = jnp.concatenate([m, inputs, ones], axis=1)
        zd = jnp.concatenate([m[:-1], inputs[1:], ones[:-1]], axis=1)
        zdw = zd * wl[:, None]
        n_z = z.shape[1]
        pad = lambda M: jnp.zeros((n_z, n_z), M.dtype).at[:n_latent, :n_latent].set(M)
        return K._Stats(
            dyn_xx=(m[1:] * wl[:, None]).T @ m[1:] + jnp.einsum("t,tij->ij", wl, P[1:]),
            dyn_xz=(m[1:].T @ zdw).at[:, :n_latent].add(jnp.einsum("t,tij->ij", wl, X)),
            dyn_zz=zdw.T @ zd + pad(jnp.einsum("t,tij->ij", wl, P[:-1])),
            dyn_n=wl.sum(),
            emi_yy=y.T @ y,
            emi_yz=y.T @ z,
            emi_zz=(z * w[:, None]).T @ z + pad(jnp.einsum("t,tij->ij", w, P)),
            emi_n=w.sum(),
            init_x=tw * m[0],
            init_xx=tw * (P[0] + jnp.outer(m[0], m[0])),
            n_trial=tw,
            log_likelihood=post.log_likelihood,
        )

    stats = jax.vmap(one)(observations, inputs, masks, live)
    return jax.tree.map(lambda a: a.sum(0), stats)


@pytest.mark.parametrize("full_R", [False, True])
def test_shared_pattern_covariances_equal_one_smoother_per_trial(full_R):
    """The EM statistics computed with Kalman covariances shared by trials of one pattern of
    observed bins (one filter/smoother covariance pass per pattern, means per trial) equal those
    of one whole smoother per trial: trials of two lengths in one time bucket, repeated and
    unique missing-bin patterns, padding trials and padding patterns, inputs."""
    from bayesneuro.latent import kalman as K

    p = random_params(50, full_R=full_R, inputs=True)
    rng = np.random.default_rng(51)
    lengths = (6, 6, 5, 6, 6, 5, 6, 6, 6)  # 9 trials: padded to 10, patterns bucketed
    us = [rng.normal(size=(T, N_FEATURE)) for T in lengths]
    ys = [dense_sample(rng, dense_joint(p, u)) for u in us]
    masks = [np.ones(T, bool) for T in lengths]
    masks[1][[0, 3]] = False
    masks[4][[0, 3]] = False  # the same pattern as trial 1
    masks[6][5] = False
    params = K._check_params(p)
    (group,) = K._prepare_trials(params, ys, us, masks)
    n_pattern = len(np.unique(np.asarray(group[4])))
    assert group[0].shape[0] == 10 and n_pattern == 5  # with the padding trial's (no live bin)
    shared = K._group_stats(params, *group)
    per_trial = _per_trial_stats(params, *group[:4])
    for name, a, b in zip(K._Stats._fields, shared, per_trial):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12, err_msg=name)


def test_em_in_float32_stays_float32_and_near_float64():
    """JAX's default dtype: 10 EM steps in float32 (shared-pattern covariances, full R) against
    the same steps in float64. Measured: log-likelihood trace within 3.3e-7 relative, parameters
    within 1.5e-5 of their largest entry (the observation covariance the farthest)."""
    p = random_params(60, full_R=True, inputs=False)
    rng = np.random.default_rng(61)
    ys = [dense_sample(rng, dense_joint(p, np.zeros((6, N_FEATURE)))) for _ in range(40)]
    f64 = fit_lds_em(p, ys, max_iter=10, tol=None, progress=False)
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
    f32 = fit_lds_em(p32, [y.astype(np.float32) for y in ys], max_iter=10, tol=None, progress=False)
    assert f32.params.dynamics.dtype == jnp.float32
    np.testing.assert_allclose(f32.log_likelihoods, f64.log_likelihoods, rtol=1e-5)
    for name, a, b in zip(LDSParams._fields, f32.params, f64.params):
        if b is not None:
            scale = np.max(np.abs(np.asarray(b)))
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b), atol=1e-4 * scale, err_msg=name)


def test_em_on_new_trial_lengths_and_counts_compiles_nothing():
    from bayesneuro._shapes import count_compilations

    p = random_params(40, full_R=False, inputs=False)
    keys = jax.random.split(jax.random.key(41), 10)
    first = [np.asarray(lds_sample(k, p, T)[1]) for k, T in zip(keys[:9], [21, 22, 23, 21, 22, 23, 21, 22, 23])]
    second = [np.asarray(lds_sample(k, p, T)[1]) for k, T in zip(keys, [22, 24, 23, 21, 24, 23, 21, 21, 22, 23])]
    fit_lds_em(p, first, max_iter=2, progress=False)  # 9 trials of 21-23 bins: padded to 10 x 24
    with count_compilations() as c:  # 10 trials of 21-24 bins (24: a length not seen before): the same
        fit = fit_lds_em(p, second, max_iter=2, progress=False)
    assert c.compilations == 0, c
    # the padded fit is the fit: its log-likelihood is the sum of the trials' own
    total = sum(float(lds_log_likelihood(p, y)) for y in second)
    np.testing.assert_allclose(fit.log_likelihoods[0], total, rtol=1e-12)


def test_em_progress_and_cap_warning():
    from bayesneuro.diagnostics import ConvergenceWarning

    p = random_params(50, full_R=False, inputs=False)
    y = np.asarray(lds_sample(jax.random.key(51), p, 40)[1])
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        fit = fit_lds_em(p, y, max_iter=2, tol=1e-14, progress=True)
    assert fit.log_likelihoods.shape == (3,) and not fit.converged


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small():
    p = random_params(40, full_R=False, inputs=False)
    return p, dense_sample(np.random.default_rng(41), dense_joint(p, np.zeros((10, 0))))


def test_bad_observations(small):
    p, y = small
    bad = y.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf .*time 3, neuron 1.*mask=False"):
        kalman_filter(p, bad)
    mask = np.ones(10, bool)
    mask[3] = False
    assert np.isfinite(kalman_filter(p, bad, mask=mask).log_likelihood)
    with pytest.raises(ValueError, match=r"observations have 2 neurons but params.loadings \(C\) has 3 rows"):
        kalman_smoother(p, y[:, :2])
    with pytest.raises(ValueError, match=r"observations must be 2-D \(time, neuron\)"):
        kalman_filter(p, y[:, 0])
    with pytest.raises(ValueError, match=r"mask must be a boolean \(time,\) array with time=10"):
        kalman_filter(p, y, mask=np.ones(9, bool))
    with pytest.raises(ValueError, match=r"mask must be a boolean"):
        kalman_filter(p, y, mask=np.ones(10))
    with pytest.raises(ValueError, match=r"trial 1: observations have 2 neurons"):
        fit_lds_em(p, [y, y[:, :2]], max_iter=1, progress=False)


def test_bad_inputs(small):
    p, y = small
    with pytest.raises(ValueError, match=r"inputs were given but params.input_weights and"):
        kalman_filter(p, y, inputs=np.zeros((10, 2)))
    pi = p._replace(input_weights=jnp.zeros((N_LATENT, 2)))
    with pytest.raises(ValueError, match=r"input weights for 2 features but no inputs"):
        kalman_filter(pi, y)
    with pytest.raises(ValueError, match=r"inputs must have shape \(time, feature\) = \(10, 2\), got \(9, 2\)"):
        kalman_filter(pi, y, inputs=np.zeros((9, 2)))
    with pytest.raises(ValueError, match=r"inputs contain NaN"):
        kalman_filter(pi, y, inputs=np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match=r"inputs must have one entry per trial \(2\), got 1"):
        lds_em_step(pi, [y, y], inputs=[np.zeros((10, 2))])


def test_bad_params(small):
    p, y = small
    with pytest.raises(ValueError, match=r"dynamics_cov \(Q\) must be positive definite; .*-1"):
        kalman_filter(p._replace(dynamics_cov=-jnp.eye(N_LATENT)), y)
    with pytest.raises(ValueError, match=r"observation_cov \(R\) \(a diagonal given as a vector\) must be positive"):
        kalman_filter(p._replace(observation_cov=jnp.zeros(N_NEURON)), y)
    with pytest.raises(ValueError, match=r"initial_cov \(S0\) must be symmetric"):
        kalman_filter(p._replace(initial_cov=jnp.array([[1.0, 0.5], [0.0, 1.0]])), y)
    with pytest.raises(ValueError, match=r"params.dynamics must have shape \(2, 2\)"):
        kalman_filter(p._replace(dynamics=jnp.eye(3)), y)
    with pytest.raises(ValueError, match=r"observation_cov \(R\) must have shape \(3, 3\) or \(3,\)"):
        kalman_filter(p._replace(observation_cov=jnp.ones(2)), y)
    with pytest.raises(ValueError, match=r"params.loadings contains NaN"):
        kalman_filter(p._replace(loadings=p.loadings.at[0, 0].set(jnp.inf)), y)
    with pytest.raises(ValueError, match=r"input_weights has 2 features but params.observation_input_weights has 3"):
        make_lds_params(
            p.dynamics, p.loadings, input_weights=np.zeros((2, 2)), observation_input_weights=np.zeros((3, 3))
        )
    with pytest.raises(ValueError, match=r"params must be an LDSParams"):
        kalman_filter(tuple(p), y)


def test_bad_sampling_and_em_arguments(small):
    p, y = small
    with pytest.raises(ValueError, match=r"n_time must be >= 1, got 0"):
        lds_sample(jax.random.key(0), p, 0)
    with pytest.raises(ValueError, match=r"n_time must be a positive integer"):
        lds_sample(jax.random.key(0), p, 2.5)
    with pytest.raises(ValueError, match=r"fixed names unknown LDSParams fields \['dynamcs'\]"):
        lds_em_step(p, y, fixed=("dynamcs",))
    with pytest.raises(ValueError, match=r"fixed must be a collection"):
        lds_em_step(p, y, fixed="dynamics")
    with pytest.raises(ValueError, match=r"every time bin is masked"):
        lds_em_step(p, y, mask=np.zeros(10, bool))
    with pytest.raises(ValueError, match=r"max_iter must be a non-negative integer"):
        fit_lds_em(p, y, max_iter=-1, progress=False)
    flat = y.copy()
    flat[:, 2] = 1.0
    with pytest.raises(ValueError, match=r"neurons \[2\] have zero variance"):
        init_lds_params(flat, 2)
    with pytest.raises(ValueError, match=r"n_latents must be an integer between 1 and the number of neurons \(3\)"):
        init_lds_params(y, 4)
