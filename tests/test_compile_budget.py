"""Compilation budget (issue 21, point 1): a new recording of another length compiles nothing, and
the opt-in persistent compilation cache saves programs that a new process loads.

These tests count XLA compilations (``bayesneuro._shapes.count_compilations``); they are not timing
tests. Other helpers add their estimators' tests at the end of this file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bayesneuro._shapes import count_compilations

_CACHE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    import numpy as np
    import bayesneuro as bn
    from bayesneuro._shapes import count_compilations
    hits = []
    jax.monitoring.register_event_listener(
        lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
    bn.enable_compilation_cache(sys.argv[1])
    from bayesneuro.density import FactorAnalysis
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 1)) @ np.ones((1, 4)) + rng.normal(size=(300, 4))
    with count_compilations() as c:
        fa = FactorAnalysis(1).fit(x, method="em", progress=False)
    print(json.dumps({"compilations": c.compilations, "hits": len(hits),
                      "loadings": np.abs(np.asarray(fa.loadings_)).ravel().tolist()}))
""")


def _run_cached(cache_dir) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # a developer's own cache (README): not this one
    out = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, str(cache_dir)], check=False, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_persistent_cache_is_written_then_loaded_by_a_new_process(tmp_path):
    """A first process writes compiled programs into the cache directory; a second one loads them
    from it (cache hits) instead of compiling, with the same result.

    ``count_compilations`` counts every program JAX obtains from the backend, compiled or loaded
    from the persistent cache (JAX 0.10 times both as one event), so loading is checked by
    ``/jax/compilation_cache/cache_hits`` events: without the cache there are none."""
    first = _run_cached(tmp_path)
    entries = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert first["compilations"] > 0 and first["hits"] == 0
    assert len(entries) >= 0.8 * first["compilations"]  # (almost) every program was saved
    second = _run_cached(tmp_path)
    assert second["hits"] >= 0.8 * first["compilations"]
    np.testing.assert_allclose(second["loadings"], first["loadings"], rtol=0, atol=1e-12)


def test_enable_compilation_cache_default_dir(monkeypatch, tmp_path):
    from bayesneuro._cache import default_cache_dir

    monkeypatch.setenv("BAYESNEURO_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("BAYESNEURO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "bayesneuro" / "jax"


def test_count_compilations_sees_a_new_shape():
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda x: jnp.sum(x**2))
    x, y = jnp.ones(5), jnp.ones(6)
    with count_compilations() as c:
        f(x)
        f(x + 1.0)
    with count_compilations() as d:
        f(y)
    assert (c.compilations, d.compilations) == (2, 1)  # f, the eager add; then f for the new shape


# -- factor analysis / dimensionality (bayesneuro/density/dimensionality.py) -------------------


def _covariances(batch: int, n: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, 400, 2)) @ rng.normal(size=(2, n)) + rng.normal(size=(batch, 400, n))
    x = x - x.mean(axis=1, keepdims=True)
    return np.einsum("bti,btj->bij", x, x) / x.shape[1]


def test_factor_analysis_em_shares_one_program_across_batch_sizes():
    """Batches (folds x bootstrap draws) are padded to buckets: another batch size of the same
    bucket (9 and 10 -> 10) reuses the compiled EM (before: one program per batch size)."""
    from bayesneuro.density.dimensionality import fit_fa_covariance

    fit_fa_covariance(_covariances(9), 2, method="em", progress=False, warn=False)
    with count_compilations() as c:
        state, ll, _, _ = fit_fa_covariance(_covariances(10, seed=1), 2, method="em", progress=False, warn=False)
    assert c.compilations == 0
    assert np.asarray(state.loadings).shape == (10, 10, 2) and ll.shape == (10,)


def test_factor_analysis_padded_latents_match_an_unpadded_em():
    """The padded EM (zero loading columns) gives the plain EM's answer: 200 steps of the textbook
    FA EM in NumPy from the same start."""
    from bayesneuro.density.dimensionality import _pca_init, fit_fa_covariance

    S = _covariances(1, seed=3)
    floor = 0.01 * np.diagonal(S, axis1=-2, axis2=-1)
    L, psi = _pca_init(S, 2, floor)
    L, psi = L[0], psi[0]
    for _ in range(200):
        beta = L.T @ np.linalg.inv(L @ L.T + np.diag(psi))
        Ezz = np.eye(2) - beta @ L + beta @ S[0] @ beta.T
        SB = S[0] @ beta.T
        L = np.linalg.solve(Ezz, SB.T).T
        psi = np.maximum(np.diag(S[0]) - np.sum(L * SB, axis=1), floor[0])
    state, _, n_iter, _ = fit_fa_covariance(S, 2, method="em", max_iter=200, tol=0.0, chunk=50, progress=False,
                                            warn=False)
    assert n_iter == 200
    np.testing.assert_allclose(np.asarray(state.loadings)[0], L, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(state.observation_var)[0], psi, rtol=0, atol=1e-10)


def test_factor_analysis_other_length_compiles_nothing():
    from bayesneuro.density import FactorAnalysis

    rng = np.random.default_rng(4)
    x = rng.normal(size=(537, 1)) @ np.ones((1, 6)) + rng.normal(size=(537, 6))
    FactorAnalysis(1).fit(x[:500], method="em", progress=False)
    with count_compilations() as c:
        fa = FactorAnalysis(1).fit(x, method="em", progress=False)
        fa.transform(x[:300])
        fa.score(x[:123])
    assert c.compilations == 0


def test_dimensionality_by_newton_compiles_nothing():
    """The default (Newton on the profile likelihood) is NumPy: cross-validation over latent counts
    and the bootstrap, on a shape never seen in this process, build one XLA program: the
    bootstrap's random draws (``jax.random.randint`` of shape (n_boot, blocks))."""
    from bayesneuro.density import Dimensionality

    rng = np.random.default_rng(5)
    x = rng.normal(size=(611, 2)) @ rng.normal(size=(2, 7)) + rng.normal(size=(611, 7))
    Dimensionality(max_dim=3).fit(x[:400], key=0, n_boot=5, progress=False)  # the key handling compiles
    with count_compilations() as c:
        est = Dimensionality(max_dim=4).fit(x, key=1, n_boot=7, progress=False)
    assert c.compilations == 1
    assert est.estimates_["n_dim"] == 2


def test_regression_decoder_other_length_compiles_nothing():
    """MAP and Laplace pad the training bins to a bucket length (masked out of the likelihood), so
    a recording of another length in the same bucket reuses the fit's programs; the result describes
    the recording's own bins. (The padded fits equal the closed form and sklearn:
    tests/test_decoders_regression.py fits 400 and 500 bins, padded to 448 and 512.)"""
    from bayesneuro import SpikeData
    from bayesneuro._shapes import bucket_length
    from bayesneuro.decoders import RegressionDecoder

    rng = np.random.default_rng(6)
    counts = rng.poisson(2.0, size=(470, 5))
    y = counts @ rng.normal(size=5) + rng.normal(size=470)
    assert bucket_length(470) == bucket_length(450) == 512
    for method in ("map", "laplace"):
        RegressionDecoder(lags=[-1, 0]).fit(SpikeData.from_counts(counts[:450], bin_size=0.05), y[:450],
                                           method=method, key=0, progress=False)
        data = SpikeData.from_counts(counts, bin_size=0.05)
        with count_compilations() as c:
            dec = RegressionDecoder(lags=[-1, 0]).fit(data, y, method=method, key=0, progress=False)
        assert c.compilations == 0, method
        kw = dec.result_.model_kwargs
        assert kw["features"].shape[0] == kw["target"].shape[0] == 469 and "mask" not in kw
        idata = dec.to_inference_data()
        assert idata.log_likelihood["target"].sizes["time"] == 469


def test_hmm_and_renewal_other_length_compile_nothing():
    """PoissonHMM pads its bins (after the last trial; masked bins emit nothing) and RenewalModel
    its ISIs to a bucket length, so another recording in the same bucket reuses every program;
    the results describe the data as given. The padded likelihoods are exact: the padded and
    unpadded HMM log-likelihoods agree to rounding, and the renewal MAP equals a fit of the same
    ISIs at a bucket length by hand (numpy gamma MLE would differ by the priors)."""
    from bayesneuro._shapes import bucket_length
    from bayesneuro.density import PoissonHMM, RenewalModel
    from bayesneuro.density.hmm import PoissonHMMCounts

    rng = np.random.default_rng(7)
    state = (np.cumsum(rng.random(700) < 0.03) % 2).astype(int)
    x = rng.poisson(np.array([[0.2, 0.5, 1.0], [1.5, 0.3, 0.2]])[state])
    assert bucket_length(660) == bucket_length(700) == 768
    PoissonHMM(2).fit(x[:660], bin_size=0.02, n_restarts=1, progress=False)
    with count_compilations() as c:
        hmm = PoissonHMM(2).fit(x, bin_size=0.02, n_restarts=1, progress=False)
    assert c.compilations == 0
    assert hmm.result_.model_kwargs["counts"].shape == (700, 3) and "mask" not in hmm.result_.model_kwargs
    p = hmm.params_
    args = (p.initial_probs, p.transition_matrix, p.rate * 0.02)
    starts = np.r_[True, np.zeros(699, bool)]
    plain = float(PoissonHMMCounts(*args, starts).log_prob(x))
    padded = float(PoissonHMMCounts(*args, np.r_[starts, np.zeros(68, bool)],
                                    np.arange(768) < 700).log_prob(np.r_[x, np.zeros((68, 3), int)]))
    assert abs(padded - plain) < 1e-9 * abs(plain)
    np.testing.assert_allclose(hmm.log_likelihood(x).sum(), plain, rtol=1e-12)

    isis = [rng.gamma(2.0, 0.01, n) for n in (300, 340)]
    assert bucket_length(560) == bucket_length(640) == 640
    RenewalModel("gamma").fit([i[:280] for i in isis], method="map", progress=False)
    with count_compilations() as c:
        ren = RenewalModel("gamma").fit(isis, method="map", progress=False)
    assert c.compilations == 0
    assert ren.result_.model_kwargs["isis"].shape == (640,) and "mask" not in ren.result_.model_kwargs


def test_maxent_log_likelihood_of_other_lengths_compiles_nothing():
    """Held-out words are padded to a bucket length for the energy program: other lengths in the
    bucket reuse it, and the values equal the energy of the unpadded words."""
    import jax.numpy as jnp

    from bayesneuro.density import MaxEnt
    from bayesneuro.density.maxent import _energy

    rng = np.random.default_rng(8)
    w = (rng.random((900, 5)) < 0.2).astype(np.int8)
    m = MaxEnt("ising").fit(w[:600], key=0, progress=False)
    m.log_likelihood(w[600:900])  # 300 words: bucket 320
    with count_compilations() as c:
        ll = m.log_likelihood(w[600:890])
    assert c.compilations == 0
    ref = np.asarray(_energy(m.params_, jnp.asarray(w[600:890], jnp.float64))) - m.log_partition_
    np.testing.assert_allclose(ll, ref, rtol=0, atol=1e-12)


def test_poisson_gpfa_map_pads_trials_and_bins_exactly(monkeypatch):
    """Poisson GPFA's MAP pads trials and bins to bucket lengths (masked): another recording in the
    same buckets compiles nothing, and the fit equals the unpadded one (bucketing switched off) to
    1e-9, objective included (the padded paths' prior constants are taken out)."""
    import warnings

    import bayesneuro as bn
    import bayesneuro.latent._gpfa_model as gm

    rng = np.random.default_rng(9)
    t = np.arange(22) * 0.05
    x = np.sin(2 * np.pi * t / 0.7 + rng.uniform(0, 6, (14, 1)))
    counts = rng.poisson(np.exp(np.log(0.4) + x[..., None] * rng.normal(0, 0.6, 6)))

    def fit(c):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few trials: convergence warnings of the start
            return bn.GPFA(1, observation="poisson").fit(bn.SpikeData.from_trials(c, bin_size=0.05), method="map",
                                                         max_iter=15, progress=False)

    fit(counts[:13, :20])  # 13 trials x 20 bins -> buckets 14 x 20
    with count_compilations() as c:
        padded = fit(counts[:, :19])  # 14 x 19 -> 14 x 20: the same programs
    assert c.compilations == 0
    assert padded.result_.samples["z"].shape[2:4] == (14, 19)
    assert padded.result_.model_kwargs["counts"].shape[:2] == (14, 19)
    monkeypatch.setattr(gm, "bucket_length", lambda n, minimum=16: n)
    plain = fit(counts[:, :19])
    for k in ("loadings", "offset", "z", "latents"):
        np.testing.assert_allclose(padded.result_.samples[k], plain.result_.samples[k], rtol=0, atol=1e-9)
    np.testing.assert_allclose(padded.result_.info["objective"], plain.result_.info["objective"], rtol=1e-12)


@pytest.mark.slow  # ~15 s: two NeuronTypes fits compiled (padded and unpadded)
def test_neuron_types_pad_neurons_exactly(monkeypatch):
    """NeuronTypes pads the neurons to a bucket count (masked): another number of neurons in the
    bucket compiles nothing, and the fit, its pointwise log-likelihood (LOO) and memberships equal
    the unpadded fit's (bucketing switched off)."""
    import warnings

    import bayesneuro.density.types as types_module
    from bayesneuro.density import NeuronTypes

    rng = np.random.default_rng(10)
    x = np.where(np.arange(23)[:, None] < 11, 0.0, 2.5) + rng.normal(0, 0.4, (23, 3))

    def fit(v):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few neurons: PSIS-LOO reliability warnings
            return NeuronTypes(max_types=2, selection="loo").fit(v, key=1, n_restarts=2, progress=False)

    fit(x[:22])  # 22 neurons -> bucket 24
    with count_compilations() as c:
        padded = fit(x)  # 23 -> 24
    assert c.compilations <= 2  # at most the folds' random permutation (jax.random.permutation: 2 tiny programs)
    ll = padded.to_inference_data().log_likelihood["features"]
    assert ll.sizes["neuron"] == 23 and padded.result_.model_kwargs["z"].shape == (23, 3)
    monkeypatch.setattr(types_module, "bucket_length", lambda n, minimum=16: n)
    plain = fit(x)
    assert padded.n_types_ == plain.n_types_ == 2
    np.testing.assert_allclose(ll.values, plain.to_inference_data().log_likelihood["features"].values,
                               rtol=0, atol=1e-8)
    np.testing.assert_allclose(padded.membership_.values, plain.membership_.values, rtol=0, atol=1e-8)
    np.testing.assert_allclose(padded.type_means_.values, plain.type_means_.values, rtol=0, atol=1e-8)
