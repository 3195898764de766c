"""The GLM as a plain NumPyro model function, and its pure-JAX pieces (links, observation models).

The model is fitted through :func:`bayesneuro.infer.fit` like any user model. Its static
configuration is one hashable :class:`GLMSpec`, so refits on data of the same layout reuse the
compiled program.

For neuron ``n`` at time bin ``t`` (``dt`` the bin size in seconds)::

    eta[t, n] = bias[n] + sum_g  S_g[t, :] . w_g[:, n]                (stimulus groups)
                        + sum_b  H[t, n, b] * history_weights[b, n]      (own spike history)
                        + sum_mb C[t, m, b] * coupling_weights[m, b, n]  (other neurons, m != n)
    rate[t, n] = exp(eta) or softplus(eta)          (spikes / s)
    counts[t, n] ~ Poisson(rate * dt) | Bernoulli(1 - exp(-rate * dt)) | NegBin(rate * dt, phi_n)

``S_g`` are stimulus features (a covariate group convolved with its basis, flattened), ``H``
and ``C`` spike counts convolved with the history / coupling bases (current bin excluded).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from .priors import Prior

__all__ = ["GLMSpec", "glm_model", "OBSERVATIONS", "LINKS", "inverse_link", "log_likelihood"]

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


def linear_predictor(spec: GLMSpec, params: dict, stimulus, history, coupling) -> jax.Array:
    """``eta`` shaped ``(time, neuron)`` from the weights and feature arrays."""
    eta = params["bias"]
    start = 0
    for g in spec.stimulus:
        w = params[f"{g.name}_weights"].reshape(g.size, spec.n_neuron)
        eta = eta + stimulus[:, start : start + g.size] @ w
        start += g.size
    if spec.history_basis:
        own = history[:, jnp.asarray(spec.self_index), :]  # (time, neuron, basis)
        eta = eta + jnp.einsum("tnb,bn->tn", own, params["history_weights"])
    if spec.coupling_basis:
        w = mask_self(params["coupling_weights"], spec.self_index)
        feats = history if spec.coupling_shares_history else coupling
        eta = eta + feats.reshape(feats.shape[0], -1) @ w.reshape(-1, spec.n_neuron)
    return eta


def mask_self(coupling_weights, self_index) -> jax.Array:
    """Zero the coupling weights of each neuron onto itself (that is the history filter)."""
    n_source, _, n_neuron = coupling_weights.shape[-3:]
    mask = jnp.ones((n_source, n_neuron)).at[jnp.asarray(self_index), jnp.arange(n_neuron)].set(0.0)
    return coupling_weights * mask[:, None, :].astype(coupling_weights.dtype)


def glm_model(counts=None, *, stimulus=None, history=None, coupling=None, spec: GLMSpec, n_time=None):
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
    spec : GLMSpec
        Static configuration.
    n_time : int, optional
        Number of bins, when no array gives it.
    """
    for arr in (counts, stimulus, history, coupling):
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
    eta = linear_predictor(spec, params, stimulus, history, coupling)
    eta = jnp.broadcast_to(eta, (n_time, spec.n_neuron))
    mu = inverse_link(eta, spec.link) * spec.bin_size
    with numpyro.plate("time", n_time, dim=-2), numpyro.plate("neuron", spec.n_neuron, dim=-1):
        numpyro.sample("counts", observation_dist(mu, spec.observation, concentration), obs=counts)


def log_likelihood(spec: GLMSpec, params: dict, counts, stimulus, history, coupling) -> jax.Array:
    """Pointwise log-likelihood ``(time, neuron)`` at one parameter set."""
    eta = linear_predictor(spec, params, stimulus, history, coupling)
    eta = jnp.broadcast_to(eta, counts.shape)
    mu = inverse_link(eta, spec.link) * spec.bin_size
    return observation_dist(mu, spec.observation, params.get("concentration")).log_prob(counts)
