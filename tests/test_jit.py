"""bayesneuro._jit: jax.jit whose outermost CPU programs compile with XLA's elemental emitters."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesneuro import _jit
from bayesneuro._jit import jit


@pytest.fixture(autouse=True)
def _restore():
    state = dict(_jit._state)
    opts, limit = dict(_jit.CPU_COMPILER_OPTIONS), _jit.FAST_COMPILE_MAX_BYTES
    yield
    _jit._state.update(state)
    _jit.CPU_COMPILER_OPTIONS.clear()
    _jit.CPU_COMPILER_OPTIONS.update(opts)
    _jit.FAST_COMPILE_MAX_BYTES = limit


def _poisson_grad(w, x, y):
    return jax.grad(lambda w: jnp.sum(y * (x @ w) - jnp.exp(x @ w)))(w)


def _data():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(500, 6)) * 0.3)
    y = jnp.asarray(rng.poisson(1.0, size=(500, 3)).astype(x.dtype))
    return jnp.asarray(rng.normal(size=(6, 3)) * 0.1), x, y


def test_same_numbers_as_jax_jit_and_the_fast_twin_is_used_on_cpu():
    w, x, y = _data()
    f = jit(_poisson_grad)
    ours, ref = f(w, x, y), jax.jit(_poisson_grad)(w, x, y)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    if jax.default_backend() == "cpu":
        assert _jit.fast_cpu_compile()
        assert f._fast is not None  # the outermost call went through the twin with the options


def test_nested_under_jit_vmap_grad_uses_the_plain_program():
    # JAX refuses compiler options on a nested jit: the wrapper must hand the plain one inside traces
    w, x, y = _data()
    f = jit(lambda w, x, y: jnp.sum(_poisson_grad(w, x, y) ** 2))
    outer = jax.jit(lambda w: f(w, x, y) + 1.0)
    np.testing.assert_allclose(float(outer(w)), float(f(w, x, y)) + 1.0, rtol=1e-12)
    batched = jax.vmap(lambda s: f(s * w, x, y))(jnp.arange(1.0, 4.0))
    assert batched.shape == (3,)
    np.testing.assert_allclose(float(batched[0]), float(f(w, x, y)), rtol=1e-12)
    g = jax.grad(lambda w: f(w, x, y))(w)
    assert g.shape == w.shape and np.all(np.isfinite(np.asarray(g)))


def test_static_arguments_decorator_form_and_methods():
    @jit(static_argnames="power")
    def pw(x, power):
        return x**power

    assert float(pw(jnp.asarray(3.0), power=2)) == 9.0
    assert float(pw(jnp.asarray(2.0), power=3)) == 8.0

    class Scaled:
        def __init__(self, k):
            self.k = k

        @jit(static_argnums=0)
        def apply(self, x):
            return self.k * x

        def __hash__(self):
            return hash(self.k)

        def __eq__(self, other):
            return isinstance(other, Scaled) and other.k == self.k

    assert float(Scaled(4.0).apply(jnp.asarray(2.0))) == 8.0
    compiled = pw.lower(jnp.asarray(3.0), power=2).compile()
    assert float(compiled(jnp.asarray(5.0))) == 25.0


def test_switched_off_and_large_arguments_use_the_plain_program():
    w, x, y = _data()
    _jit.set_fast_cpu_compile(False)
    f = jit(_poisson_grad)
    f(w, x, y)
    assert f._fast is None and not _jit.fast_cpu_compile()
    _jit.set_fast_cpu_compile(True)
    _jit.FAST_COMPILE_MAX_BYTES = x.nbytes // 2  # these arguments are now "large"
    g = jit(_poisson_grad)
    np.testing.assert_array_equal(np.asarray(g(w, x, y)), np.asarray(f(w, x, y)))
    assert g._fast is None
    with pytest.raises(TypeError, match="True or False"):
        _jit.set_fast_cpu_compile("yes")


@pytest.mark.parametrize(("value", "wanted"), [("0", False), ("off", False), ("1", True), ("", True)])
def test_environment_variable(monkeypatch, value, wanted):
    monkeypatch.setenv("BAYESNEURO_FAST_CPU_COMPILE", value)
    _jit._state["wanted"] = None
    assert _jit.fast_cpu_compile() is (wanted and _jit._options_work())


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are checked on the CPU backend only")
def test_options_this_jaxlib_rejects_warn_once_and_fall_back():
    _jit.CPU_COMPILER_OPTIONS.clear()
    _jit.CPU_COMPILER_OPTIONS["xla_cpu_no_such_option_for_this_test"] = True
    _jit._state["checked"] = None
    f = jit(lambda x: 2.0 * x)
    with pytest.warns(RuntimeWarning, match="rejects the XLA options"):
        out = f(jnp.arange(3.0))
    np.testing.assert_array_equal(np.asarray(out), [0.0, 2.0, 4.0])
    assert f._fast is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(jnp.arange(3.0))  # checked once: no second warning


def test_copy_and_forwarded_attributes():
    import copy

    f = jit(lambda x: x * 3.0)
    g = copy.copy(f)  # copies before __init__ state exists must not recurse through __getattr__
    assert float(g(jnp.asarray(2.0))) == 6.0
    shape = f.eval_shape(jax.ShapeDtypeStruct((4,), jnp.float32))
    assert shape.shape == (4,)
    f.clear_cache()
    assert float(f(jnp.asarray(1.0))) == 3.0


def test_own_compiler_options_are_passed_through():
    f = jit(lambda x: x + 1.0, compiler_options={})
    assert not isinstance(f, _jit._Jitted)
    assert float(f(jnp.asarray(1.0))) == 2.0
