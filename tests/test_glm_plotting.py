"""bayesneuro.glm.plotting: what is drawn is what the fitted GLM says (bands, colour limits, rates, spikes)."""

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import EventCollection, PolyCollection  # noqa: E402
from scipy.ndimage import gaussian_filter1d  # noqa: E402

import bayesneuro as bn  # noqa: E402
from bayesneuro.glm import simulate_counts  # noqa: E402
from bayesneuro.glm.plotting import plot_coupling, plot_filters, plot_raster, plot_rates  # noqa: E402

BIN = 0.005
N_TIME = 10000
IDS = np.array([10, 20, 30])


def _simulated_data():
    """Three coupled neurons driven by two covariates, with refractory history."""
    rng = np.random.default_rng(1)
    s = rng.normal(size=(N_TIME, 2))
    drive = np.log(20.0) + 0.6 * s[:, [0]] * np.array([1.0, -1.0, 0.5]) + 0.3 * s[:, [1]]
    hist = bn.bases.RaisedCosineLog(3, window=10).matrix() @ np.array([-2.0, -0.5, 0.0])
    history = np.tile(hist[:, None], (1, 3))
    coupling = np.zeros((10, 3, 3))
    coupling[:, 0, 1] = 0.5 * hist / hist.min()  # neuron 10 excites neuron 20
    kernel = bn.glm.feedback_kernel(history, coupling)
    counts, _, first, _ = simulate_counts(jax.random.key(0), drive, kernel, bin_size=BIN)
    assert (np.asarray(first) < 0).all()
    return bn.SpikeData.from_counts(
        np.asarray(counts).astype(int), bin_size=BIN, neuron_ids=IDS, covariates=s,
        feature_names=["contrast", "luminance"],
    )


def _glm():
    return bn.PoissonGLM(
        stimulus_basis=bn.bases.Identity(4),  # can express the true lag-0 stimulus filter
        history_basis=bn.bases.RaisedCosineLog(3, window=10),
        coupling=True,
    )


@pytest.fixture(scope="module")
def data():
    return _simulated_data()


@pytest.fixture(scope="module")
def laplace_glm(data):
    return _glm().fit(data, method="laplace", key=0, progress=False, num_samples=300)


@pytest.fixture(scope="module")
def map_glm(data):
    """MAP fit of two of the three neurons (all three are coupling sources)."""
    return _glm().fit(data, method="map", key=0, progress=False, neurons=[30, 20])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _band_limits(collection: PolyCollection, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest vertex of a fill_between band at each x."""
    verts = collection.get_paths()[0].vertices
    lo = np.array([verts[np.isclose(verts[:, 0], xi), 1].min() for xi in x])
    hi = np.array([verts[np.isclose(verts[:, 0], xi), 1].max() for xi in x])
    return lo, hi


# ----------------------------------------------------------------------------- plot_filters


def test_filter_grid_layout(laplace_glm):
    grid = plot_filters(laplace_glm)
    # stimulus row, history row, one coupling row per source; one column per neuron
    assert grid.shape == (5, 3)
    assert [ax.get_title() for ax in grid[0]] == ["neuron 10", "neuron 20", "neuron 30"]
    assert [ax.get_ylabel() for ax in grid[:, 0]][:2] == ["stimulus", "history"]
    for r in range(3):  # a neuron never couples to itself: its panel is hidden
        for c in range(3):
            assert grid[2 + r, c].get_visible() == (r != c)
    # row labels on the leftmost visible panel; row "from 10" starts at column 1
    assert grid[2, 1].get_ylabel() == "coupling\nfrom 10" and grid[3, 0].get_ylabel() == "coupling\nfrom 20"
    assert grid[3, 1].get_ylabel() == ""


def test_filter_bands_are_the_credible_intervals(laplace_glm):
    prob = 0.8
    grid = plot_filters(laplace_glm, prob=prob)
    ds = laplace_glm.filters(prob=prob)
    # stimulus panel of neuron 20: one band and one line per covariate
    ax = grid[0, 1]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    x = ds["stimulus_lag"].values * 1e3
    for j, band in enumerate(bands):
        lo, hi = _band_limits(band, x)
        np.testing.assert_allclose(lo, ds["stimulus_lower"].values[1, j], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(hi, ds["stimulus_upper"].values[1, j], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ax.lines[j].get_ydata(), ds["stimulus"].values[1, j], rtol=1e-12)
    assert [t.get_text() for t in grid[0, 0].get_legend().get_texts()] == ["contrast", "luminance"]
    # coupling from neuron 10 (source 0) onto neuron 20 (column 1)
    ax = grid[2, 1]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    lo, hi = _band_limits(band, ds["coupling_lag"].values * 1e3)
    np.testing.assert_allclose(lo, ds["coupling_lower"].values[1, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hi, ds["coupling_upper"].values[1, 0], rtol=1e-12, atol=1e-12)
    # the strong simulated edge 10 -> 20 is excitatory and its band excludes zero at some lag
    assert (ds["coupling_lower"].values[1, 0] > 0).any()
    # a narrower prob gives a narrower band
    wide = laplace_glm.filters(prob=0.99)
    assert np.all(wide["history_upper"] - wide["history_lower"] >= ds["history_upper"] - ds["history_lower"])


def test_map_fit_has_no_bands(map_glm):
    grid = plot_filters(map_glm, name="history")
    assert grid.shape == (1, 2)
    ds = map_glm.filters()
    for c, ax in enumerate(grid[0]):
        assert not [col for col in ax.collections if isinstance(col, PolyCollection)]
        assert len(ax.lines) == 2  # the filter and the zero line
        np.testing.assert_allclose(ax.lines[0].get_ydata(), ds["history"].values[c], rtol=1e-12)
        np.testing.assert_allclose(ax.lines[0].get_xdata(), ds["history_lag"].values * 1e3)


def test_filter_selection_and_given_axes(laplace_glm):
    fig, axes = plt.subplots(2, 2)
    grid = plot_filters(laplace_glm, name="coupling", neurons=[30, 10], axes=axes)
    assert grid[0, 0] is axes[0, 0] and grid.shape == (2, 2)
    # titles go on the topmost visible panel of each column
    assert [grid[1, 0].get_title(), grid[0, 1].get_title()] == ["neuron 30", "neuron 10"]
    # row 0 = from neuron 30: hidden onto itself (column 0), drawn onto neuron 10
    assert not grid[0, 0].get_visible() and grid[0, 1].get_visible()
    ds = laplace_glm.filters()
    np.testing.assert_allclose(grid[0, 1].lines[0].get_ydata(), ds["coupling"].values[0, 2], rtol=1e-12)
    grid = plot_filters(laplace_glm, name="coupling", neurons=[20], sources=[10, 30])
    assert grid.shape == (2, 1) and all(ax.get_visible() for ax in grid[:, 0])


def test_filter_bad_input(laplace_glm):
    with pytest.raises(ValueError, match="no 'speed' filters; it has"):
        plot_filters(laplace_glm, name="speed")
    with pytest.raises(ValueError, match="no neuron with id 99"):
        plot_filters(laplace_glm, neurons=[10, 99])
    with pytest.raises(ValueError, match="exceed max_panels=4"):
        plot_filters(laplace_glm, max_panels=4)
    with pytest.raises(ValueError, match="axes must hold 5 x 3 = 15 Axes"):
        plot_filters(laplace_glm, axes=plt.subplots(2, 2)[1])
    with pytest.raises(RuntimeError, match="not fitted"):
        plot_filters(_glm())
    with pytest.raises(TypeError, match="PoissonGLM"):
        plot_filters(object())


# ----------------------------------------------------------------------------- plot_coupling


def test_coupling_heatmap_is_symmetric_and_marks_edges(laplace_glm):
    ax = plot_coupling(laplace_glm, network_prob=0.9)
    image = ax.images[0]
    lo, hi = image.get_clim()
    matrix = laplace_glm.coupling_matrix().values
    off = ~np.eye(3, dtype=bool)
    assert lo == -hi
    assert hi == pytest.approx(np.abs(matrix[off]).max(), rel=1e-12)
    shown = np.asarray(image.get_array().filled(np.nan))
    assert np.isnan(np.diag(shown)).all()
    np.testing.assert_allclose(shown[off], matrix[off], rtol=1e-12)
    edges = laplace_glm.coupling_network(prob=0.9).values
    assert edges[1, 0]  # the simulated edge 10 -> 20 (row neuron 20, column source 10)
    (dots,) = ax.collections
    marked = {(int(round(y)), int(round(x))) for x, y in dots.get_offsets()}
    assert marked == {tuple(rc) for rc in np.argwhere(edges)}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "20", "30"]


def test_coupling_without_network_and_errors(map_glm):
    fig, given = plt.subplots()
    ax = plot_coupling(map_glm, ax=given)
    assert ax is given and not ax.collections
    lo, hi = ax.images[0].get_clim()
    assert lo == -hi > -np.inf
    with pytest.raises(ValueError, match="needs posterior draws"):
        plot_coupling(map_glm, network_prob=0.9)


# ----------------------------------------------------------------------------- plot_rates


def test_rates_are_the_prediction(laplace_glm, data):
    axes = plot_rates(laplace_glm, data, neurons=[20], t_start=2.0, t_stop=4.0)
    assert axes.shape == (1,)
    observed, predicted = axes[0].lines
    window = (data.bin_centers >= 2.0) & (data.bin_centers < 4.0)
    np.testing.assert_allclose(predicted.get_xdata(), data.bin_centers[window])
    np.testing.assert_allclose(predicted.get_ydata(), laplace_glm.predict_rate(data)[window, 1], rtol=1e-12)
    np.testing.assert_allclose(observed.get_ydata(), data.counts[window, 1] / BIN)


def test_rates_smoothing_stays_within_segments(laplace_glm, data):
    _, test, _ = data.split(fractions=(0.6, 0.2, 0.2), n_blocks=10)
    assert test.n_trial == 2  # two separate stretches of bins
    sd = 0.02
    axes = plot_rates(laplace_glm, test, smooth=sd)
    observed, predicted = axes[0].lines
    x = observed.get_xdata()
    assert np.isnan(x).sum() == 1  # the line is broken at the gap
    expected = np.concatenate(
        [gaussian_filter1d(tr.counts[:, 0] / BIN, sd / BIN, mode="nearest") for tr in test.iter_trials()]
    )
    y = observed.get_ydata()
    np.testing.assert_allclose(y[~np.isnan(y)], expected, rtol=1e-12)
    with pytest.raises(ValueError, match="no bins have centres"):
        plot_rates(laplace_glm, test, t_start=100.0, t_stop=101.0)
    with pytest.raises(ValueError, match="smooth must be"):
        plot_rates(laplace_glm, test, smooth=-1.0)


def test_subset_fit_columns_are_modelled_neurons_and_sources_all(map_glm, data):
    glm = map_glm
    grid = plot_filters(glm)
    assert grid.shape == (2 + 3, 2)  # stimulus, history, coupling from 10, 20, 30
    hidden = {(r, c) for r in range(5) for c in range(2) if not grid[r, c].get_visible()}
    assert hidden == {(4, 0), (3, 1)}  # 30 onto 30, 20 onto 20
    ax = plot_coupling(glm)
    shown = np.asarray(ax.images[0].get_array().filled(np.nan))
    assert shown.shape == (2, 3)
    np.testing.assert_array_equal(np.isnan(shown), [[False, False, True], [False, True, False]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["30", "20"]
    (axes,) = [plot_rates(glm, data, neurons=[20], t_stop=1.0)]
    observed, predicted = axes[0].lines
    np.testing.assert_allclose(observed.get_ydata(), data.counts[:200, 1] / BIN)
    np.testing.assert_allclose(predicted.get_ydata(), glm.predict_rate(data)[:200, 1], rtol=1e-12)


# ----------------------------------------------------------------------------- plot_raster


def test_raster_ticks_are_the_spiking_bins(laplace_glm, data):
    sim = laplace_glm.simulate(data, key=5)
    ax = plot_raster(data, sim, t_start=1.0, t_stop=3.0)
    rows = [c for c in ax.collections if isinstance(c, EventCollection)]
    assert len(rows) == 6  # real and simulated for each of three neurons
    window = (data.bin_centers >= 1.0) & (data.bin_centers < 3.0)
    for k in range(3):
        for row, counts in ((rows[2 * k], data.counts), (rows[2 * k + 1], sim.data.counts)):
            expected = data.bin_centers[window][counts[window, k] > 0]
            np.testing.assert_allclose(np.sort(row.get_positions()), expected)
    # first neuron on top, real above simulated
    assert rows[0].get_lineoffset() > rows[1].get_lineoffset() > rows[2].get_lineoffset()
    ax = plot_raster(data, sim.data, neurons=[30])
    assert len(ax.collections) == 2


def test_raster_bad_input(data):
    other = data.select_neurons([10, 20])
    with pytest.raises(ValueError, match="different neurons"):
        plot_raster(data, other)
    with pytest.raises(ValueError, match="share their bins"):
        plot_raster(data, data.time_slice(0.0, 1.0))
    with pytest.raises(TypeError, match="SpikeData"):
        plot_raster(data, data.counts)
