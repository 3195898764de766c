"""The GLM as a plain NumPyro model function, and its pure-JAX pieces (links, observation models).

The model is fitted through :func:`bayesneuro.infer.fit` like any user model. Its static
configuration is one hashable :class:`GLMSpec`, so refits on data of the same layout reuse the
compiled program.

For neuron ``n`` at time bin ``t`` (``dt`` the bin size in seconds)::

    eta[t, n] = bias[n] + sum_g  S_g[t, :] . w_g[:, n]                (stimulus groups)
                        + sum_b  H[t, n, b] * history_weights[b, n]      (own spike history)
                        + sum_mb C[t, m, b] * coupling_weights[m, b, n]  (other neurons, m != n;
                                                                           sources only, if named)
    rate[t, n] = exp(eta) or softplus(eta)          (spikes / s)
    counts[t, n] ~ Poisson(rate * dt) | Bernoulli(1 - exp(-rate * dt)) | NegBin(rate * dt, phi_n)

``S_g`` are stimulus features (a covariate group convolved with its basis, flattened), ``H``
and ``C`` spike counts convolved with the history / coupling bases (current bin excluded).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesneuro._jit import jit

from .priors import GroupLasso, Prior

#: the factor site holding the coupling group-lasso penalty (handled by a proximal step at MAP)
GROUP_LASSO_SITE = "coupling_group_lasso"

__all__ = ["LINKS", "OBSERVATIONS", "GLMSpec", "expected_counts", "fft_size", "fft_spectra", "glm_model", "inverse_link"]

OBSERVATIONS = ("poisson", "bernoulli", "negative-binomial")
LINKS = ("exp", "softplus")


@dataclass(frozen=True)
class StimulusGroup:
    """One covariate group: its name, features, number of basis functions and prior."""

    name: str
    features: tuple[str, ...]
    n_basis: int
    prior: Prior

    @property
    def size(self) -> int:
        return len(self.features) * self.n_basis


@dataclass(frozen=True)
class GLMSpec:
    """Static configuration of :func:`glm_model` (hashable)."""

    n_neuron: int
    n_source: int
    bin_size: float
    observation: str = "poisson"
    link: str = "exp"
    stimulus: tuple[StimulusGroup, ...] = ()
    history_basis: int = 0  # number of history basis functions; 0: no spike history
    history_prior: Prior | None = None
    coupling_basis: int = 0  # number of coupling basis functions; 0: no coupling
    coupling_prior: Prior | None = None
    coupling_shares_history: bool = True  # coupling features are the history features
    bias_prior: tuple[float, float] | None = (0.0, 10.0)
    self_index: tuple[int, ...] = ()  # column of each modelled neuron among the sources
    # columns of the sources whose coupling filters are free (sorted); empty: every source
    coupling_sources: tuple[int, ...] = ()
    # "fft": history and coupling terms as FFT convolutions of the spikes with the filters (memory
    # O(time x neuron)); "design": as products with precomputed features (time x source x basis)
    filter_mode: str = "design"
    history_matrix: tuple[tuple[float, ...], ...] = ()  # (lag, basis) rows, for "fft"
    coupling_matrix: tuple[tuple[float, ...], ...] = ()
    n_fft: int = 0
    coupling_gram: tuple[tuple[float, ...], ...] = ()  # B'B of the coupling basis (GroupLasso prior)

    def weight_sites(self) -> dict[str, tuple[str, tuple[int, int, int], Prior]]:
        """Weight blocks: site name -> (group dim or None, shape ``(group, basis, neuron)`` or ``(basis, neuron)``, prior)."""
        out = {}
        for g in self.stimulus:
            if g.name == "stimulus":  # one basis for all covariates: (feature, basis, neuron)
                out["stimulus_weights"] = ("feature", (len(g.features), g.n_basis, self.n_neuron), g.prior)
            else:  # one covariate on its own basis: (basis, neuron)
                out[f"{g.name}_weights"] = (None, (g.n_basis, self.n_neuron), g.prior)
        if self.history_basis:
            out["history_weights"] = (None, (self.history_basis, self.n_neuron), self.history_prior)
        if self.coupling_basis:
            out["coupling_weights"] = (
                "source",
                (self.n_source, self.coupling_basis, self.n_neuron),
                self.coupling_prior,
            )
        return out


def inverse_link(eta: jax.Array, link: str) -> jax.Array:
    """Rate in spikes/s from the linear predictor."""
    if link == "exp":
        return jnp.exp(eta)
    if link == "softplus":
        return jax.nn.softplus(eta)
    raise ValueError(f"unknown link {link!r}; choose from {LINKS}")


def _bernoulli_logits(mu: jax.Array) -> jax.Array:
    """Logits of ``P(spike) = 1 - exp(-mu)``: ``log(expm1(mu))``, stable for small and large mu."""
    return mu + jnp.log(-jnp.expm1(-mu))


def observation_dist(mu: jax.Array, observation: str, concentration=None):
    """Distribution of the counts of a bin with expected count ``mu`` (rate x bin size)."""
    if observation == "poisson":
        return dist.Poisson(mu)
    if observation == "bernoulli":
        return dist.Bernoulli(logits=_bernoulli_logits(mu))
    if observation == "negative-binomial":
        return dist.NegativeBinomial2(mu, concentration)
    raise ValueError(f"unknown observation model {observation!r}; choose from {OBSERVATIONS}")


def linear_predictor(spec: GLMSpec, params: dict, features: dict) -> jax.Array:
    """``eta`` shaped ``(time, neuron)`` (or broadcastable) from the weights and feature arrays.

    ``features`` holds ``stimulus`` and, by ``spec.filter_mode``, either ``history`` /
    ``coupling`` (design mode) or ``spectra`` / ``rows`` (FFT mode).
    """
    eta = params["bias"]
    start = 0
    stimulus = features.get("stimulus")
    for g in spec.stimulus:
        w = params[f"{g.name}_weights"].reshape(g.size, spec.n_neuron)
        eta = eta + stimulus[:, start : start + g.size] @ w
        start += g.size
    if spec.filter_mode == "fft" and (spec.history_basis or spec.coupling_basis):
        return eta + _fft_feedback(spec, params, features["spectra"], features["rows"])
    history, coupling = features.get("history"), features.get("coupling")
    if spec.history_basis:
        own = history[:, jnp.asarray(spec.self_index), :]  # (time, neuron, basis)
        eta = eta + jnp.einsum("tnb,bn->tn", own, params["history_weights"])
    if spec.coupling_basis:
        w = mask_self(params["coupling_weights"], spec.self_index, spec.coupling_sources)
        feats = history if spec.coupling_shares_history else coupling
        eta = eta + feats.reshape(feats.shape[0], -1) @ w.reshape(-1, spec.n_neuron)
    return eta


def fft_spectra(spikes, n_lag: int, n_fft: int) -> jax.Array:
    """Spectra of the overlap-save blocks of ``spikes`` ``(time, source)``, as a real array.

    Block ``k`` covers rows ``k * hop - n_lag ... k * hop + hop - 1`` (``hop = n_fft - n_lag``,
    zeros before the start). Returns ``(freq, block, 2 * source)``: real parts, then imaginary
    parts. Computed once per data set; the fit only multiplies these by the filters' spectra.
    """
    spikes = jnp.asarray(spikes)
    hop = n_fft - n_lag
    n_in = spikes.shape[0]
    n_blocks = -(-n_in // hop)
    padded = jnp.pad(spikes, ((n_lag, n_blocks * hop + n_fft - n_lag - n_in), (0, 0)))
    idx = np.arange(n_blocks)[:, None] * hop + np.arange(n_fft)[None, :]
    spec = jnp.fft.rfft(padded.T[:, idx], axis=-1)  # (source, block, freq): FFT on the last axis
    spec = jnp.transpose(spec, (2, 1, 0))  # (freq, block, source)
    return jnp.concatenate([spec.real, spec.imag], axis=-1)


def _fft_feedback(spec: GLMSpec, params: dict, spectra, rows) -> jax.Array:
    """History + coupling term ``sum_{l, m} spikes[t - 1 - l, m] K[l, m, n]`` by overlap-save FFT.

    ``K`` is built from the basis weights (``K = B @ w``), so nothing of size
    ``time x source x basis`` is formed: memory stays ``O(time x neuron)``, and the work per bin
    is about ``8 n_fft / (2 (n_fft - lag))`` flops per (source, neuron) pair, against
    ``2 x basis`` for a design-matrix product.
    """
    dtype = spectra.dtype
    n_neuron, self_index = spec.n_neuron, jnp.asarray(spec.self_index)
    _, n_blocks, two_m = spectra.shape
    n_source = two_m // 2
    n_lag = max(len(spec.history_matrix), len(spec.coupling_matrix))
    n_fft = spec.n_fft
    hop = n_fft - n_lag
    kernel = jnp.zeros((n_source, n_neuron, n_lag), dtype)  # (source, neuron, lag)
    if spec.coupling_basis:
        w = mask_self(params["coupling_weights"], spec.self_index, spec.coupling_sources)
        coup = jnp.einsum("lb,mbn->mnl", jnp.asarray(spec.coupling_matrix, dtype), w)
        kernel = kernel.at[:, :, : coup.shape[-1]].add(coup)
    if spec.history_basis:
        hist = jnp.einsum("lb,bn->nl", jnp.asarray(spec.history_matrix, dtype), params["history_weights"])
        kernel = kernel.at[self_index, jnp.arange(n_neuron), : hist.shape[-1]].add(hist)
    # filter taps at lags 1..n_lag bins (the current bin is excluded)
    g = jnp.fft.rfft(jnp.pad(kernel, ((0, 0), (0, 0), (1, n_fft - n_lag - 1))), axis=-1)
    g = jnp.transpose(g, (2, 0, 1))  # (freq, source, neuron)
    gr, gi = g.real, g.imag
    g_real = jnp.concatenate([jnp.concatenate([gr, gi], -1), jnp.concatenate([-gi, gr], -1)], axis=1)
    prod = jnp.einsum("fkm,fmn->fkn", spectra, g_real)  # (freq, block, 2 * neuron)
    out_f = jax.lax.complex(prod[..., :n_neuron], prod[..., n_neuron:])
    out = jnp.fft.irfft(jnp.transpose(out_f, (1, 2, 0)), n=n_fft, axis=-1)[..., n_lag:]  # (block, neuron, hop)
    out = jnp.transpose(out, (0, 2, 1)).reshape(n_blocks * hop, n_neuron)
    return out[rows]


#: :func:`fft_spectra` as one compiled program per (spikes shape, lags, FFT size); the estimator
#: pads the spikes to a bucketed length, so a recording of another length reuses it
fft_spectra_jit = jit(fft_spectra, static_argnums=(1, 2))


def _expected_counts(spec: GLMSpec, params: dict, features: dict, n_time: int) -> jax.Array:
    eta = jnp.broadcast_to(linear_predictor(spec, params, features), (n_time, spec.n_neuron))
    return inverse_link(eta, spec.link) * spec.bin_size


#: expected counts ``rate * bin_size`` ``(time, neuron)`` from the weights and feature arrays, as
#: one compiled program (inlined when traced inside another program). The model calls it, so
#: running the model eagerly (tracing it for its sites, finding its starting point) costs one
#: compilation per data shape instead of one per array operation.
expected_counts = jit(_expected_counts, static_argnames=("spec", "n_time"))


def fft_size(n_lag: int) -> int:
    """FFT length for ``n_lag`` lags: a power of two ``>= 4 (n_lag + 1)``, at least 64."""
    return max(64, 1 << int(np.ceil(np.log2(4 * (n_lag + 1)))))


def coupling_mask(n_source: int, n_neuron: int, self_index, sources=()) -> np.ndarray:
    """Which coupling filters are free, ``(source, neuron)``: 1.0, or 0.0 for the fixed-at-zero ones.

    A neuron's filter onto itself is zero (that is the history filter), and so is every filter
    from a source not in ``sources`` (column indices; empty: every source is one). NumPy, from
    static values only, so it costs no compilation when the weights are traced.
    """
    mask = np.ones((n_source, n_neuron))
    mask[np.asarray(self_index, dtype=np.int64), np.arange(n_neuron)] = 0.0
    if len(sources):
        allowed = np.zeros(n_source, dtype=bool)
        allowed[np.asarray(sources, dtype=np.int64)] = True
        mask[~allowed] = 0.0
    return mask


def mask_self(coupling_weights, self_index, sources=()) -> jax.Array:
    """Zero the coupling weights of each neuron onto itself and those of non-sources.

    ``sources``: column indices of the sources allowed to couple (empty: all); see
    :func:`coupling_mask`.
    """
    coupling_weights = jnp.asarray(coupling_weights)
    n_source, _, n_neuron = coupling_weights.shape[-3:]
    mask = jnp.asarray(coupling_mask(n_source, n_neuron, self_index, sources), coupling_weights.dtype)
    return coupling_weights * mask[:, None, :]


def glm_model(
    counts=None, *, stimulus=None, history=None, coupling=None, spectra=None, rows=None, mask=None, spec: GLMSpec,
    n_time=None,
):
    """NumPyro model of a population GLM (see the module docstring).

    Parameters
    ----------
    counts : array, shape (time, neuron), optional
        Observed spike counts of the modelled neurons; None to simulate.
    stimulus : array, shape (time, stimulus_coef), optional
        Stimulus features of all groups side by side.
    history : array, shape (time, source, basis), optional
        Spike counts of every source neuron convolved with the history basis.
    coupling : array, shape (time, source, basis), optional
        Same with the coupling basis, when it differs from the history basis.
    spectra : array, shape (freq, block, 2 * source), optional
        FFT mode: :func:`fft_spectra` of every source's spike counts (``lag`` empty bins
        between trials).
    rows : array of int, shape (time,), optional
        FFT mode: the row of those spike counts of each time bin.
    mask : array of bool, shape (time,), optional
        Bins that enter the likelihood (default: all). False for the padding that makes a
        recording's length one of a few bucket sizes (so that another recording reuses the
        compiled program), and for the first bins of each trial when the estimator excludes
        bins with an incomplete filter window.
    spec : GLMSpec
        Static configuration.
    n_time : int, optional
        Number of bins, when no array gives it.
    """
    for arr in (counts, stimulus, history, coupling, rows, mask):
        if arr is not None:
            n_time = arr.shape[0]
            break
    params = {}
    if spec.bias_prior is None:
        bias_dist = dist.ImproperUniform(dist.constraints.real, (), ())
    else:
        bias_dist = dist.Normal(*spec.bias_prior)
    with numpyro.plate("neuron", spec.n_neuron, dim=-1):
        params["bias"] = numpyro.sample("bias", bias_dist)
        if spec.observation == "negative-binomial":
            concentration = numpyro.sample("concentration", dist.Gamma(2.0, 0.2))
        else:
            concentration = None
    for name, (group_dim, shape, prior) in spec.weight_sites().items():
        params[name] = prior.sample(name, group_dim, shape, basis_dim=name.replace("_weights", "_basis"))
    if isinstance(spec.coupling_prior, GroupLasso) and spec.coupling_basis:
        w = params["coupling_weights"]
        # (a name of its own: `mask` is the bins' likelihood mask, used below)
        free = coupling_mask(spec.n_source, spec.n_neuron, spec.self_index, spec.coupling_sources)
        self_mask = jnp.asarray(free, w.dtype)
        gram = jnp.asarray(spec.coupling_gram, dtype=w.dtype)
        numpyro.factor(GROUP_LASSO_SITE, -spec.coupling_prior.penalty(w, gram, self_mask))
    features = {"stimulus": stimulus, "history": history, "coupling": coupling, "spectra": spectra, "rows": rows}
    mu = expected_counts(spec, params, features, int(n_time))
    with numpyro.plate("time", n_time, dim=-2), numpyro.plate("neuron", spec.n_neuron, dim=-1):
        if mask is None:
            numpyro.sample("counts", observation_dist(mu, spec.observation, concentration), obs=counts)
        else:
            with numpyro.handlers.mask(mask=jnp.asarray(mask, dtype=bool)[:, None]):
                numpyro.sample("counts", observation_dist(mu, spec.observation, concentration), obs=counts)
