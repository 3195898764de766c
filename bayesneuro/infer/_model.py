"""Model introspection shared by every inference method.

Everything here treats a model as what it is to NumPyro: a plain Python function
that calls ``numpyro.sample`` / ``plate`` / ``deterministic`` and takes its data
as keyword arguments. Nothing here knows about any model family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.initialization import init_to_uniform
from numpyro.primitives import Messenger

__all__ = [
    "SiteInfo",
    "as_key",
    "complete_samples",
    "constrain",
    "latent_sites",
    "observed_sites",
    "trace_model",
    "uncondition",
    "unconstrain",
]


def to_device(value) -> jax.Array:
    """``jnp.asarray`` without a compiled program: numpy arrays are transferred by ``device_put``.

    (``jnp.asarray`` of a numpy array compiles a small program per shape and dtype.)
    """
    if isinstance(value, (np.ndarray, np.number)):
        return jax.device_put(value)
    return jnp.asarray(value)


def as_key(key: Any) -> jax.Array:
    """Return a raw ``uint32[2]`` PRNG key from a typed key, a raw key or an int seed.

    Raises
    ------
    TypeError
        If ``key`` is None (bayesneuro never picks a random seed for you) or of an
        unknown type.
    """
    if key is None:
        raise TypeError(
            "a random `key` is required (e.g. key=jax.random.key(0)); bayesneuro "
            "never chooses a seed for you, so that every result is reproducible"
        )
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        seed = int(key)
        if 0 <= seed < 2**32 and jax.config.jax_default_prng_impl == "threefry2x32":
            # the same bits as jax.random.PRNGKey(seed), without compiling a program for it
            return to_device(np.array([0, seed], dtype=np.uint32))
        return jax.random.PRNGKey(seed)
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return key
    raise TypeError(
        f"`key` must be a JAX PRNG key (jax.random.key(0)) or an int seed, got {type(key).__name__} "
        f"with dtype {key.dtype} and shape {key.shape}"
    )


class SiteInfo(NamedTuple):
    """What the converters need to know about one sample or deterministic site.

    Attributes
    ----------
    name : str
        Site name.
    shape : tuple of int
        Shape of one value of the site (no sample dims).
    plates : tuple of (str, int)
        ``(plate name, axis index into shape)`` for each plate the site sits in.
    event_ndim : int
        Number of trailing event dims (0 for deterministic sites whose layout is unknown).
    observed : bool
        Whether the site is observed.
    discrete : bool
        Whether the site has a discrete support.
    """

    name: str
    shape: tuple
    plates: tuple
    event_ndim: int
    observed: bool
    discrete: bool


def trace_model(model: Callable, model_kwargs: dict, key: jax.Array | None = None) -> dict:
    """Run the model once and return its NumPyro trace (for shapes and site metadata).

    Latent values are drawn uniformly in the unconstrained space (``init_to_uniform``)
    rather than from the prior, so improper priors trace too.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    seeded = handlers.substitute(handlers.seed(model, key), substitute_fn=init_to_uniform)
    return handlers.trace(seeded).get_trace(**model_kwargs)


def abstract_trace(model: Callable, model_kwargs: dict) -> tuple[dict, dict]:
    """:func:`trace_model` on abstract values: no eager operation runs, so nothing compiles.

    Array arguments are traced (as under :func:`jax.jit`); every site value in the returned
    trace is a tracer, good for its shape, dtype, distribution and support only. Also returns
    the unconstrained latent values' shapes (``jax.ShapeDtypeStruct``) and the flattening
    ``unravel`` (flat vector -> dict of unconstrained latent values) under ``"unravel"`` and
    ``"shapes"`` of the second dict.
    """
    from jax.flatten_util import ravel_pytree
    from numpyro.distributions.transforms import biject_to as _biject

    arrays = {k: v for k, v in model_kwargs.items() if isinstance(v, (np.ndarray, jax.Array))}
    static = {k: v for k, v in model_kwargs.items() if k not in arrays}
    box: dict = {}

    def run(arr):
        tr = trace_model(model, {**static, **arr}, jax.random.PRNGKey(0))
        box["trace"] = tr
        lat = latent_sites(tr)
        u = {n: _biject(s["fn"].support).inv(s["value"]) for n, s in lat.items()
             if not s["fn"].support.is_discrete}
        if len(u) == len(lat) and u:
            box["unravel"] = ravel_pytree(u)[1]
        return u

    box["shapes"] = jax.eval_shape(run, arrays)
    return box.pop("trace"), box


def site_infos(trace: dict) -> dict[str, SiteInfo]:
    """Summarise sample and deterministic sites of a trace, in program order."""
    out: dict[str, SiteInfo] = {}
    for name, site in trace.items():
        if site["type"] not in ("sample", "deterministic"):
            continue
        value = site["value"]
        shape = tuple(jnp.shape(value))
        if site["type"] == "sample":
            fn = site["fn"]
            event_ndim = len(fn.event_shape)
            discrete = bool(fn.support.is_discrete)
            observed = bool(site["is_observed"])
        else:
            event_ndim, discrete, observed = 0, False, False
        batch_ndim = len(shape) - event_ndim
        plates = []
        for frame in site.get("cond_indep_stack", ()):
            axis = batch_ndim + frame.dim
            if 0 <= axis < len(shape):
                plates.append((frame.name, axis))
        out[name] = SiteInfo(name, shape, tuple(plates), event_ndim, observed, bool(discrete))
    return out


def latent_sites(trace: dict) -> dict[str, dict]:
    """Unobserved sample sites of a trace."""
    return {
        n: s
        for n, s in trace.items()
        if s["type"] == "sample" and not s["is_observed"] and not s["infer"].get("is_auxiliary")
    }


def observed_sites(trace: dict) -> dict[str, dict]:
    """Observed sample sites of a trace."""
    return {n: s for n, s in trace.items() if s["type"] == "sample" and s["is_observed"]}


def check_continuous(trace: dict, method: str) -> None:
    """Raise a clear error if a latent site is discrete (only NUTS can enumerate)."""
    for name, site in latent_sites(trace).items():
        if site["fn"].support.is_discrete:
            raise ValueError(
                f"latent site {name!r} is discrete; method={method!r} needs continuous "
                "latents. Marginalise it out in the model, or use method='nuts' with "
                "infer={'enumerate': 'parallel'} on the site."
            )


def transforms(trace: dict) -> dict:
    """Bijections from unconstrained space to each latent site's support."""
    return {n: biject_to(s["fn"].support) for n, s in latent_sites(trace).items()}


def constrain(params_u: dict, tfs: dict) -> dict:
    """Map unconstrained values to the latent sites' supports."""
    return {n: tfs[n](v) for n, v in params_u.items()}


def unconstrain(params: dict, tfs: dict) -> dict:
    """Map constrained latent values to unconstrained space."""
    return {n: tfs[n].inv(v) for n, v in params.items()}


def complete_samples(model: Callable, model_kwargs: dict, latents: dict, key: jax.Array) -> dict:
    """Add deterministic sites to a batch of latent draws (leading axis = draw).

    The model is replayed once per draw with the latent values substituted; the
    observed sites stay observed, so nothing is resampled.
    """
    n = next(iter(latents.values())).shape[0] if latents else 1
    keys = jax.random.split(key, n)

    def one(k, z):
        tr = handlers.trace(handlers.substitute(handlers.seed(model, k), data=z)).get_trace(
            **model_kwargs
        )
        return {name: s["value"] for name, s in tr.items() if s["type"] == "deterministic"}

    det = jax.vmap(one)(keys, latents) if latents else one(keys[0], {})
    return {**latents, **det}


class uncondition(Messenger):
    """Handler that turns every observed sample site into an unobserved one.

    Used to draw from the posterior (or prior) predictive: the model keeps its
    data arguments, so models whose later sites depend on observed history (a
    GLM with spike-history terms) give one-step-ahead predictive draws.
    """

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"]:
            msg["is_observed"] = False
            msg["value"] = None
            msg["infer"] = {**msg.get("infer", {}), "was_observed": True}


def predictive(
    model: Callable, model_kwargs: dict, latents: dict, key: jax.Array, sites: list[str]
) -> dict:
    """Draw the named (observed) sites given each latent draw (leading axis = draw)."""
    n = next(iter(latents.values())).shape[0]
    keys = jax.random.split(key, n)

    def one(k, z):
        tr = handlers.trace(
            handlers.seed(handlers.substitute(uncondition(model), data=z), k)
        ).get_trace(**model_kwargs)
        return {s: tr[s]["value"] for s in sites}

    return jax.vmap(one)(keys, latents)
