r"""What a latent encodes, written by hand: the latents are sample sites, not marginalised.

A density model (GPFA, a Poisson LDS, ...) summarises each time bin's spikes about a latent
:math:`z_t` as a Gaussian *message* :math:`\mu_t \mid z_t \sim N(z_t, 1/J)` of known precision
:math:`J`. Does the latent encode a covariate :math:`s_t`? Regress it, with its own smooth
variation as a stationary AR(1) residual:

.. math::

    z_t = a + w\, s_t + r_t, \qquad r_0 = \sigma \epsilon_0, \qquad
    r_t = \rho\, r_{t-1} + \sigma \sqrt{1 - \rho^2}\, \epsilon_t, \qquad \epsilon_t \sim N(0, 1).

Here every :math:`\epsilon_t` is a parameter (non-centred: the sampler sees standardised
innovations, the residual is built from them by ``jax.lax.scan``) and NUTS explores them with
:math:`(a, w, \sigma, \rho)`. :class:`bayesneuro.joint.LatentEncoder` fits the same model with
the latents summed out exactly by a Kalman filter (same priors: Normal(0, 10) intercept and
weight, HalfNormal(10) ``residual_sd``, Uniform(-1, 1) ``ar_coef``), so the two posteriors of
:math:`(a, w, \sigma, \rho)` agree (``tests/test_gallery_latent_encoding.py`` checks it).

Run as a script to simulate, fit both with NUTS and print the weight's posteriors::

    python models/latent_encoding_by_hand.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist


def latent_encoding(messages=None, *, covariate, precision, prior_scale=10.0):
    """One latent on one covariate with an AR(1) residual, seen through Gaussian messages.

    Parameters
    ----------
    messages : array (time, 1), optional
        Message means :math:`\\mu_t`; sampled when None.
    covariate : array (time,)
        The covariate :math:`s_t`, aligned with the messages.
    precision : float
        Message precision :math:`J` (the same in every bin).
    prior_scale : float
        SD of the Normal priors of intercept and weight, scale of the HalfNormal prior of the
        residual SD.
    """
    s = jnp.asarray(covariate)
    n_time = s.shape[0]
    intercept = numpyro.sample("intercept", dist.Normal(0.0, prior_scale))
    weight = numpyro.sample("weight", dist.Normal(0.0, prior_scale))
    residual_sd = numpyro.sample("residual_sd", dist.HalfNormal(prior_scale))
    ar_coef = numpyro.sample("ar_coef", dist.Uniform(-1.0, 1.0))
    with numpyro.plate("time", n_time):
        eps = numpyro.sample("eps", dist.Normal(0.0, 1.0))  # standardised innovations

    innov_sd = residual_sd * jnp.sqrt(1.0 - ar_coef**2)

    def step(r_prev, e):
        r = ar_coef * r_prev + innov_sd * e
        return r, r

    r0 = residual_sd * eps[0]
    _, rest = jax.lax.scan(step, r0, eps[1:])
    r = jnp.concatenate([r0[None], rest])
    z = numpyro.deterministic("z", (intercept + weight * s + r)[:, None])  # (time, latent=1)
    numpyro.sample("messages", dist.Normal(z, 1.0 / jnp.sqrt(precision)).to_event(2), obs=messages)


def simulate(key, *, n_time=300, weight=0.8, intercept=0.2, ar_coef=0.6, residual_sd=0.6, precision=4.0):
    """A latent that encodes a smooth covariate, seen through messages of known precision.

    Returns
    -------
    truth : dict
        ``intercept``, ``weight``, ``ar_coef``, ``residual_sd`` and the latent ``z`` (time, 1).
    data : dict
        ``messages`` (time, 1), ``covariate`` (time,), ``precision`` (float).
    """
    k_s, k_r, k_m = jax.random.split(key, 3)
    white = np.asarray(jax.random.normal(k_s, (n_time + 20,)))
    s = np.convolve(white, np.ones(10) / np.sqrt(10), "same")[:n_time]  # smooth, unit variance
    eps = np.asarray(jax.random.normal(k_r, (n_time,)))
    r = np.zeros(n_time)
    r[0] = residual_sd * eps[0]
    for t in range(1, n_time):
        r[t] = ar_coef * r[t - 1] + residual_sd * np.sqrt(1 - ar_coef**2) * eps[t]
    z = (intercept + weight * s + r)[:, None]
    mu = z + np.asarray(jax.random.normal(k_m, (n_time, 1))) / np.sqrt(precision)
    truth = {"intercept": intercept, "weight": weight, "ar_coef": ar_coef, "residual_sd": residual_sd, "z": z}
    return truth, {"messages": mu, "covariate": s, "precision": float(precision)}


def main(fast=False):
    from bayesneuro import infer
    from bayesneuro.joint import LatentEncoder, LatentPosterior

    truth, data = simulate(jax.random.key(0), n_time=200 if fast else 300)
    opts = {"num_warmup": 300 if fast else 1000, "num_samples": 300 if fast else 1000, "num_chains": 2,
            "target_accept_prob": 0.9}  # small steps: the innovations sit in a funnel of residual_sd, ar_coef
    res = infer.fit(latent_encoding, method="nuts", key=jax.random.key(1), dims={"covariate": ["time"]},
                    **data, **opts)
    post = LatentPosterior.from_messages(data["messages"], np.eye(1) * data["precision"], bin_size=0.02)
    enc = LatentEncoder(residual="ar1").fit(post, data["covariate"][:, None], method="nuts", key=2, **opts)
    hand = res.flat_samples()
    lib = enc.result_.flat_samples()
    print(f"true weight {truth['weight']}, residual_sd {truth['residual_sd']}, ar_coef {truth['ar_coef']}")
    print(f"{'':>12} {'by hand (latents sampled)':>28} {'LatentEncoder (Kalman)':>24}")
    for name, h, lb in [("weight", hand["weight"], lib["weights"][:, 0, 0, 0]),
                        ("residual_sd", hand["residual_sd"], lib["residual_sd"][:, 0]),
                        ("ar_coef", hand["ar_coef"], lib["ar_coef"][:, 0])]:
        print(f"{name:>12} {h.mean():>17.3f} +- {h.std():.3f} {lb.mean():>15.3f} +- {lb.std():.3f}")


if __name__ == "__main__":
    import sys

    main(fast="--fast" in sys.argv)
