"""The models/ gallery's hand-written latent encoder (latents as NUTS sample sites) agrees with
LatentEncoder (latents summed out by a Kalman filter): same model, same priors, same posterior."""

import jax
import numpy as np
import pytest

from bayesneuro import infer
from bayesneuro.joint import LatentEncoder, LatentPosterior

from .helpers import load_gallery

hand = load_gallery("latent_encoding_by_hand")

# Settings from diagnostics (fit() warns and warnings are errors): target_accept_prob 0.9, as at
# the default 0.8 the hand model's innovations, sampled next to residual_sd and ar_coef (the
# scale of their funnel), give a few divergent transitions; 1000 draws per chain, as with 500
# the largest R-hat over the 200 innovations exceeds 1.01 by chance. The Kalman-marginalised
# library model needs neither, but gets the same settings.
NUTS = {"num_warmup": 500, "num_samples": 1000, "num_chains": 2, "target_accept_prob": 0.9, "progress": False}
# Monte Carlo z-score allowed for a difference of two independent MCMC estimates. The gap is
# measured in units of its own Monte Carlo standard error, computed from each fit's bulk ESS
# (>= 200: fit() warns below 100 per chain, and warnings are errors): for a mean,
# sqrt(sd_h^2 / ess_h + sd_l^2 / ess_l); for an SD, the same with sd^2 (kurtosis - 1) / 4 in
# place of sd^2 (the variance of a sample SD; sd^2 / 2 for a normal posterior). Four MC
# standard errors: a false alarm has probability about 6e-5 per comparison if the two
# posteriors are the same. With ESS ~ 900 per fit the tolerance is about 0.2 posterior SD on a
# mean and about 0.15 posterior SD on an SD, well below the plug-in's disagreement below.
Z = 4.0


def _mc_gap(a, ess_a, b, ess_b):
    """(|mean gap| / its MC SE, |sd gap| / its MC SE) of two sets of draws of a scalar."""

    def var_of_sd(x, ess):
        kurt = np.mean((x - x.mean()) ** 4) / np.var(x) ** 2
        return np.var(x) * (kurt - 1) / (4 * ess)

    mean_se = np.sqrt(np.var(a) / ess_a + np.var(b) / ess_b)
    sd_se = np.sqrt(var_of_sd(a, ess_a) + var_of_sd(b, ess_b))
    return abs(a.mean() - b.mean()) / mean_se, abs(a.std() - b.std()) / sd_se


@pytest.fixture(scope="module")
def fits():
    truth, data = hand.simulate(jax.random.key(1), n_time=200)
    res = infer.fit(hand.latent_encoding, method="nuts", key=jax.random.key(1), **data, **NUTS)
    post = LatentPosterior.from_messages(data["messages"], np.eye(1) * data["precision"], bin_size=0.02)
    s = data["covariate"][:, None]
    lib = LatentEncoder(residual="ar1").fit(post, s, method="nuts", key=2, **NUTS)
    plug = LatentEncoder(residual="ar1").fit(post, s, method="nuts", uncertainty="mean", key=2, **NUTS)

    def draws(r, names):
        d, ess = r.flat_samples(), r.info["diagnostics"].ess_bulk
        return {k: (np.ravel(d[n]), ess[n]) for k, n in names.items()}

    names = {"weight": "weights", "residual_sd": "residual_sd"}
    return (draws(res, {"weight": "weight", "residual_sd": "residual_sd"}), draws(lib.result_, names),
            draws(plug.result_, names))


@pytest.mark.parametrize("param", ["weight", "residual_sd"])
def test_hand_model_agrees_with_latent_encoder(fits, param):
    by_hand, lib, _ = fits
    (a, ess_a), (b, ess_b) = by_hand[param], lib[param]
    assert min(ess_a, ess_b) >= 200, (ess_a, ess_b)
    z_mean, z_sd = _mc_gap(a, ess_a, b, ess_b)
    assert z_mean < Z and z_sd < Z, (param, a.mean(), b.mean(), a.std(), b.std(), z_mean, z_sd)


def test_the_check_can_fail_plug_in_disagrees(fits):
    # uncertainty="mean" treats the messages as the latents (no message noise): the white
    # message noise goes into the residual, whose SD is inflated (about sqrt(sigma^2 + 1/J))
    by_hand, _, plug = fits
    (a, ess_a), (b, ess_b) = by_hand["residual_sd"], plug["residual_sd"]
    z_mean, _ = _mc_gap(a, ess_a, b, ess_b)
    assert z_mean > 5 * Z, (a.mean(), b.mean(), z_mean)


if __name__ == "__main__":  # the figures: python -m tests.test_gallery_latent_encoding
    by_hand, lib, plug = fits.__wrapped__()
    for p in ("weight", "residual_sd"):
        for name, other in (("library", lib), ("plug-in", plug)):
            (a, ea), (b, eb) = by_hand[p], other[p]
            print(p, name, f"hand {a.mean():.4f} +- {a.std():.4f} (ess {ea:.0f})",
                  f"{name} {b.mean():.4f} +- {b.std():.4f} (ess {eb:.0f})",
                  "MC z (mean, sd): %.2f %.2f" % _mc_gap(a, ea, b, eb))
