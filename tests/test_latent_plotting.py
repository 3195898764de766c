"""bayesneuro.latent.plotting: what is drawn is what the fitted GPFA / PoissonLDS says."""

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.quiver import Quiver  # noqa: E402
from scipy import stats  # noqa: E402

import bayesneuro as bn  # noqa: E402
from bayesneuro.diagnostics import ConvergenceWarning  # noqa: E402
from bayesneuro.latent.plds import PLDSParams  # noqa: E402
from bayesneuro.latent.plotting import (  # noqa: E402
    plot_condition_averages,
    plot_eigenvalues,
    plot_flow_field,
    plot_loadings,
    plot_trajectories,
    plot_trajectories_2d,
    plot_variance_explained,
)

BIN = 0.02
IDS = np.array([10, 11, 12, 13, 14, 15])
THETA = 0.25


def _rotation(k=2, rho=0.95):
    a = np.eye(k) * rho
    a[:2, :2] = rho * np.array([[np.cos(THETA), -np.sin(THETA)], [np.sin(THETA), np.cos(THETA)]])
    return a


def _plds(k=2, a=None, b=None):
    rng = np.random.default_rng(3)
    a = _rotation(k) if a is None else np.asarray(a, float)
    b = np.linspace(0.05, -0.05, k) if b is None else np.asarray(b, float)
    return bn.PoissonLDS.from_params(
        PLDSParams(np.zeros(k), np.eye(k), a, b, np.zeros((k, 0)), 0.03 * np.eye(k),
                   rng.normal(scale=0.7, size=(6, k)), np.full(6, 2.5)),
        bin_size=BIN, neuron_ids=IDS,
    )


@pytest.fixture(scope="module")
def plds():
    return _plds()


@pytest.fixture(scope="module")
def plds_data(plds):
    return plds.simulate(4, 30, key=1).data


@pytest.fixture(scope="module")
def gpfa_data():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 3, 25)
    w = rng.normal(size=(2, 6))
    rate = 3 + 1.5 * np.stack([np.sin(t), np.cos(2 * t)], -1) @ w
    counts = rng.poisson(np.clip(rate, 0.2, None), (6, 25, 6))
    return bn.SpikeData.from_trials(list(counts), bin_size=BIN, neuron_ids=IDS, trial_ids=[5, 6, 7, 8, 9, 10])


@pytest.fixture(scope="module")
def gpfa(gpfa_data):
    # a deliberately short fit: the plots are checked against whatever it estimates
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"GPFA EM .*stopped at max_iter", category=ConvergenceWarning)
        return bn.GPFA(2).fit(gpfa_data, key=0, progress=False, max_iter=20)


@pytest.fixture(params=["gpfa", "plds"])
def fitted(request):
    """(model, data) for each model family."""
    if request.param == "gpfa":
        return request.getfixturevalue("gpfa"), request.getfixturevalue("gpfa_data")
    return request.getfixturevalue("plds"), request.getfixturevalue("plds_data")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _band_limits(collection: PolyCollection, x: np.ndarray):
    verts = collection.get_paths()[0].vertices
    lo = np.array([verts[np.isclose(verts[:, 0], xi), 1].min() for xi in x])
    hi = np.array([verts[np.isclose(verts[:, 0], xi), 1].max() for xi in x])
    return lo, hi


def _trial_rows(data, label):
    return np.flatnonzero(data.segment_ids == int(np.flatnonzero(data.trials == label)[0]))


# ----------------------------------------------------------------------------- trajectories


def test_trajectories_are_the_posterior_with_bands(fitted):
    model, data = fitted
    prob = 0.8
    z = stats.norm.ppf(0.9)
    chosen = data.trials[[2, 0]]
    axes = plot_trajectories(model, data, trials=chosen, latents=(1, 0), prob=prob)
    assert axes.shape == (2,) and [a.get_ylabel() for a in axes] == ["latent 1", "latent 0"]
    ds = model.transform(data)
    mean, sd = ds["mean"].values, ds["sd"].values
    for a, j in zip(axes, (1, 0)):
        assert len(a.lines) == 2 and len(a.collections) == 2
        for c, label in enumerate(chosen):
            rows = _trial_rows(data, label)
            t = (np.arange(len(rows)) + 0.5) * BIN  # seconds within the trial
            np.testing.assert_allclose(a.lines[c].get_xdata(), t, rtol=1e-12)
            np.testing.assert_allclose(a.lines[c].get_ydata(), mean[rows, j], rtol=1e-12)
            lo, hi = _band_limits(a.collections[c], t)
            np.testing.assert_allclose(lo, mean[rows, j] - z * sd[rows, j], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(hi, mean[rows, j] + z * sd[rows, j], rtol=1e-10, atol=1e-12)
    assert axes[-1].get_xlabel() == "time in trial (s)"


def test_trajectories_given_axes_and_bad_input(plds, plds_data, gpfa):
    fig, given = plt.subplots()
    out = plot_trajectories(plds, plds_data, latents=[1], ax=given)
    assert out[0] is given and len(given.lines) == plds_data.n_trial
    with pytest.raises(ValueError, match=r"one Axes per latent \(2\), got 1"):
        plot_trajectories(plds, plds_data, ax=given)
    with pytest.raises(ValueError, match="no trial 99"):
        plot_trajectories(plds, plds_data, trials=[0, 99])
    with pytest.raises(ValueError, match="out of range: the model has 2 latents"):
        plot_trajectories(plds, plds_data, latents=(0, 2))
    with pytest.raises(ValueError, match="distinct"):
        plot_trajectories(plds, plds_data, latents=(1, 1))
    with pytest.raises(ValueError, match=r"prob must be a probability in \(0, 1\)"):
        plot_trajectories(plds, plds_data, prob=1.5)
    with pytest.raises(TypeError, match="GPFA or bayesneuro.PoissonLDS"):
        plot_trajectories(object(), plds_data)
    with pytest.raises(TypeError, match="SpikeData"):
        plot_trajectories(plds, plds_data.counts)
    with pytest.raises(RuntimeError, match="not fitted"):
        plot_trajectories(bn.GPFA(2), plds_data)
    with pytest.raises(ValueError, match="neurons"):  # the model's own check of the data
        plot_trajectories(gpfa, plds_data.select_neurons([10, 11, 12]))


def test_trajectories_2d_paths_and_condition_colours(fitted):
    model, data = fitted
    cond = np.array(["b", "a"] * (data.n_trial // 2) + ["b"] * (data.n_trial % 2))
    ax = plot_trajectories_2d(model, data, latents=(1, 0), condition=cond)
    mean = model.transform(data)["mean"].values
    assert len(ax.lines) == data.n_trial
    for p, line in enumerate(ax.lines):
        rows = np.flatnonzero(data.segment_ids == p)
        np.testing.assert_allclose(line.get_xdata(), mean[rows, 1], rtol=1e-12)
        np.testing.assert_allclose(line.get_ydata(), mean[rows, 0], rtol=1e-12)
        same = [q for q in range(data.n_trial) if cond[q] == cond[p]]
        assert all(to_rgba(ax.lines[q].get_color()) == to_rgba(line.get_color()) for q in same)
    assert to_rgba(ax.lines[0].get_color()) != to_rgba(ax.lines[1].get_color())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]  # sorted
    assert to_rgba(ax.get_legend().legend_handles[0].get_color()) == to_rgba(ax.lines[1].get_color())
    starts = np.array([mean[np.flatnonzero(data.segment_ids == p)[0], [1, 0]] for p in range(data.n_trial)])
    np.testing.assert_allclose(ax.collections[0].get_offsets(), starts, rtol=1e-12)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("latent 1", "latent 0")


def test_trajectories_2d_selection_and_bad_input(plds, plds_data):
    ax = plot_trajectories_2d(plds, plds_data, trials=[3])
    assert len(ax.lines) == 1
    rows = _trial_rows(plds_data, 3)
    np.testing.assert_allclose(ax.lines[0].get_xdata(), plds.transform(plds_data)["mean"].values[rows, 0])
    with pytest.raises(ValueError, match="exactly 2 latents"):
        plot_trajectories_2d(plds, plds_data, latents=(0,))
    with pytest.raises(ValueError, match=r"one label per trial of the data \(4"):
        plot_trajectories_2d(plds, plds_data, condition=["a", "b"])


# ----------------------------------------------------------------------------- condition averages


def test_condition_averages_are_trial_means_with_standard_errors(fitted):
    model, data = fitted
    cond = np.array([1, 0, 1, 0] + [0] * (data.n_trial - 4))
    prob = 0.95
    z = stats.norm.ppf(0.975)
    axes = plot_condition_averages(model, data, cond, latents=(0, 1), prob=prob)
    mean = model.transform(data)["mean"].values
    n_time = int(np.sum(data.segment_ids == 0))
    paths = mean.reshape(data.n_trial, n_time, model.n_latents)  # equal-length trials, in order
    t = (np.arange(n_time) + 0.5) * BIN
    for a, j in zip(axes, (0, 1)):
        assert len(a.lines) == 2 and len(a.collections) == 2
        for c, level in enumerate([0, 1]):  # sorted condition labels
            x = paths[cond == level, :, j]
            avg, sem = x.mean(axis=0), x.std(axis=0, ddof=1) / np.sqrt(len(x))
            np.testing.assert_allclose(a.lines[c].get_xdata(), t, rtol=1e-12)
            np.testing.assert_allclose(a.lines[c].get_ydata(), avg, rtol=1e-12)
            lo, hi = _band_limits(a.collections[c], t)
            np.testing.assert_allclose(lo, avg - z * sem, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(hi, avg + z * sem, rtol=1e-10, atol=1e-12)
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == [
        f"0 (n={np.sum(cond == 0)})", f"1 (n={np.sum(cond == 1)})"]


def test_condition_averages_bad_input(plds, plds_data):
    # a condition with a single trial: its mean is drawn without a band
    axes = plot_condition_averages(plds, plds_data, ["x", "y", "y", "y"], latents=[0])
    assert len(axes[0].lines) == 2 and len(axes[0].collections) == 1
    counts = [tr.counts for tr in plds_data.iter_trials()]
    ragged = bn.SpikeData.from_trials([counts[0], counts[1][:20], counts[2]], bin_size=BIN, neuron_ids=IDS)
    with pytest.raises(ValueError, match=r"condition 'a': its trials have different lengths \[20, 30\]"):
        plot_condition_averages(plds, ragged, ["a", "a", "b"])
    axes = plot_condition_averages(plds, ragged, ["a", "b", "a"])  # equal lengths within each condition
    assert len(axes[0].lines) == 2
    with pytest.raises(ValueError, match="one label per trial"):
        plot_condition_averages(plds, plds_data, ["a"] * 3)
    with pytest.raises(ValueError, match="prob"):
        plot_condition_averages(plds, plds_data, ["a"] * 4, prob=0.0)


# ----------------------------------------------------------------------------- loadings, variance


def test_loadings_heatmaps(gpfa, plds):
    for model, orth, expected in (
        (gpfa, True, gpfa.orthonormal_loadings_),
        (gpfa, False, gpfa.loadings_),
        (plds, True, plds.loadings_),
    ):
        ax = plot_loadings(model, orthonormal=orth)
        image = ax.images[0]
        np.testing.assert_array_equal(np.asarray(image.get_array()), expected)
        lo, hi = image.get_clim()
        assert lo == -hi and hi == pytest.approx(np.abs(expected).max(), rel=1e-12)
        assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in IDS]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1"]
    fig, given = plt.subplots()
    assert plot_loadings(plds, ax=given) is given
    with pytest.raises(TypeError, match="GPFA or bayesneuro.PoissonLDS"):
        plot_loadings(np.eye(2))


def test_variance_explained_gpfa(gpfa):
    ax = plot_variance_explained(gpfa)
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, gpfa.variance_explained_, rtol=1e-12)
    assert len(heights) == 2 and sum(heights) < 1


def test_variance_explained_plds_is_the_stationary_log_rate_share():
    model = _plds(k=3, a=_rotation(3, rho=0.9))
    a, q, c = model.dynamics_, model.dynamics_cov_, model.loadings_
    sigma, term = np.zeros((3, 3)), q.copy()
    for _ in range(600):  # stationary covariance as the series sum_k A^k Q A^kT
        sigma += term
        term = a @ term @ a.T
    lam = np.sort(np.linalg.eigvalsh(c @ sigma @ c.T))[::-1][:3]
    ax = plot_variance_explained(model)
    np.testing.assert_allclose([p.get_height() for p in ax.patches], lam / lam.sum(), rtol=1e-8)
    unstable = _plds(a=1.01 * np.eye(2))
    with pytest.raises(ValueError, match=r"not stable \(max \|eigenvalue of A\| = 1.01"):
        plot_variance_explained(unstable)


# ----------------------------------------------------------------------------- dynamics


def test_flow_field_is_the_one_step_change():
    model = _plds(k=3)
    a, b = model.dynamics_, model.dynamics_bias_
    fixed = np.linalg.solve(np.eye(3) - a, b)
    ax = plot_flow_field(model, latents=(0, 2), grid=7)
    (quiver,) = [c for c in ax.collections if isinstance(c, Quiver)]
    x, y = np.asarray(quiver.X), np.asarray(quiver.Y)
    assert x.size == 49 and len(np.unique(x)) == 7 and len(np.unique(y)) == 7
    states = np.tile(fixed, (49, 1))
    states[:, 0], states[:, 2] = x, y  # the other latent (1) sits at the fixed point
    flow = states @ (a - np.eye(3)).T + b
    np.testing.assert_allclose(np.asarray(quiver.U), flow[:, 0], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(quiver.V), flow[:, 2], rtol=1e-10, atol=1e-14)
    (marker,) = [ln for ln in ax.lines if ln.get_label() == "fixed point"]
    np.testing.assert_allclose([marker.get_xdata()[0], marker.get_ydata()[0]], fixed[[0, 2]], rtol=1e-12)
    np.testing.assert_allclose(fixed, model.dynamics_summary().fixed_point, rtol=1e-12)
    # the grid is centred on the fixed point
    np.testing.assert_allclose([(x.min() + x.max()) / 2, (y.min() + y.max()) / 2], fixed[[0, 2]], rtol=1e-10)
    lam = model.dynamics_summary().eigenvalues[0]
    assert f"{lam.real:.3f}±{abs(lam.imag):.3f}i" in ax.get_title()
    assert f"f={THETA / (2 * np.pi * BIN):.3g} Hz" in ax.get_title()


def test_flow_field_overlays_trajectories(plds, plds_data):
    ax = plot_flow_field(plds, data=plds_data, grid=4)
    paths = [ln for ln in ax.lines if ln.get_label().startswith("trial")]
    assert len(paths) == plds_data.n_trial
    mean = plds.transform(plds_data)["mean"].values
    for p, line in enumerate(paths):
        rows = np.flatnonzero(plds_data.segment_ids == p)
        np.testing.assert_allclose(line.get_xdata(), mean[rows, 0], rtol=1e-12)
        np.testing.assert_allclose(line.get_ydata(), mean[rows, 1], rtol=1e-12)
    (quiver,) = [c for c in ax.collections if isinstance(c, Quiver)]
    assert quiver.X.min() <= mean[:, 0].min() and quiver.X.max() >= mean[:, 0].max()  # grid spans the paths


def test_flow_field_without_fixed_point_and_bad_input(plds, gpfa):
    walk = _plds(a=np.eye(2), b=[0.1, 0.0])  # I - A singular: constant drift, no fixed point
    ax = plot_flow_field(walk, grid=3)
    (quiver,) = ax.collections
    np.testing.assert_allclose(np.asarray(quiver.U), 0.1)
    np.testing.assert_allclose(np.asarray(quiver.V), 0.0, atol=1e-15)
    assert not [ln for ln in ax.lines if ln.get_label() == "fixed point"]
    assert "no unique fixed point" in ax.get_title()
    with pytest.raises(TypeError, match="GPFA has no latent dynamics"):
        plot_flow_field(gpfa)
    with pytest.raises(ValueError, match="grid must be an integer >= 2"):
        plot_flow_field(plds, grid=1)
    with pytest.raises(ValueError, match="exactly 2 latents"):
        plot_flow_field(plds, latents=(0, 1, 1))


def test_eigenvalues_in_the_complex_plane(gpfa):
    model = _plds(k=3)
    ax = plot_eigenvalues(model)
    shown = ax.collections[0].get_offsets()
    lam = np.linalg.eigvals(model.dynamics_)
    np.testing.assert_allclose(np.sort_complex(shown[:, 0] + 1j * shown[:, 1]), np.sort_complex(lam), rtol=1e-12)
    circle = ax.lines[0]
    np.testing.assert_allclose(np.hypot(circle.get_xdata(), circle.get_ydata()), 1.0, rtol=1e-12)
    assert f"{np.abs(lam).max():.4g}" in ax.get_title()
    fig, given = plt.subplots()
    assert plot_eigenvalues(model, ax=given) is given
    with pytest.raises(TypeError, match="GPFA has no latent dynamics"):
        plot_eigenvalues(gpfa)
    with pytest.raises(TypeError, match="PoissonLDS"):
        plot_eigenvalues("A")
