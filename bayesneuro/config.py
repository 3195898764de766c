"""Fit configurations for ``bayesneuro fit CONFIG``: parse, validate, load data, build the model.

A configuration is a TOML file (read with the standard library's :mod:`tomllib`) or a YAML file
(``.yaml``/``.yml``, read with PyYAML's ``safe_load``). It has four tables: ``[data]`` (what to
load), ``[model]`` (what to fit), ``[fit]`` (how) and ``[output]`` (where to write). The schema is
documented in ``docs/cli.md``; :func:`load_config` checks all of it before anything is loaded or
fitted, and every problem is a :class:`ConfigError` whose message starts with the key path, e.g.
``model.kind: unknown kind 'glmm'; choose one of glm, gpfa, plds, hmm, maxent, fa, custom``.

Relative paths in a configuration resolve against the folder of the configuration file, so a
configuration and its data can move together.

Examples
--------
>>> import os, tempfile
>>> from bayesneuro.config import ConfigError, load_config
>>> folder = tempfile.mkdtemp()
>>> path = os.path.join(folder, "fit.toml")
>>> with open(path, "w") as fh:
...     _ = fh.write('[data]\\npath = "rec.npz"\\n[model]\\nkind = "glm"\\n[fit]\\nmethd = "map"\\n')
>>> try:
...     load_config(path)
... except ConfigError as err:
...     print(err)
fit.methd: unknown key; did you mean 'method'? (valid keys: method, seed, options)
"""

from __future__ import annotations

import csv
import difflib
import importlib.util
import inspect
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KINDS",
    "Config",
    "ConfigError",
    "DataConfig",
    "FitConfig",
    "ModelConfig",
    "OutputConfig",
    "build_model",
    "custom_model_data",
    "load_config",
    "load_data",
    "parse_config",
]


class ConfigError(ValueError):
    """A problem with a fit configuration; the message starts with the key path."""


# ------------------------------------------------------------------------------------- kinds

# options of bayesneuro.infer.fit that hold Python objects (callables, optimisers): not
# expressible in a configuration file
_OBJECT_OPTIONS = {"init_strategy", "preconditioner", "proximal", "optimizer"}


def _infer_options(method: str) -> set[str]:
    from .infer.fit import _OPTIONS

    return set(_OPTIONS[method]) - _OBJECT_OPTIONS


@dataclass(frozen=True)
class _Kind:
    """How one ``model.kind`` is built and fitted."""

    target: str  # "module:attribute" of the estimator class ("" for custom)
    methods: tuple[str, ...]
    default_method: str | None
    # constructor parameters the CLI sets itself (not allowed in model.options)
    reserved: tuple[str, ...] = ("progress",)
    description: str = ""

    def cls(self):
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


#: The model kinds: estimator, inference methods (the first listed is the default).
KINDS: dict[str, _Kind] = {
    "glm": _Kind("bayesneuro.glm:PoissonGLM", ("map", "laplace", "svi", "nuts"), "map",
                 description="PoissonGLM: stimulus, history and coupling filters"),
    "gpfa": _Kind("bayesneuro.latent:GPFA", ("em", "map", "laplace", "svi", "nuts"), None,
                  description="GPFA: em for observation='gaussian' (default), map/laplace/svi/nuts for 'poisson'"),
    "plds": _Kind("bayesneuro.latent:PoissonLDS", ("laplace-em", "svi", "nuts"), "laplace-em",
                  description="PoissonLDS: Poisson linear dynamical system"),
    "hmm": _Kind("bayesneuro.density:PoissonHMM", ("map", "laplace", "nuts"), "map",
                 reserved=("progress", "method"), description="PoissonHMM: population states"),
    "maxent": _Kind("bayesneuro.density:MaxEnt", ("auto", "exact", "mc"), "auto",
                    description="MaxEnt: maximum-entropy model of binary words (MAP + Laplace; exact "
                                "log Z up to 20 neurons, Monte Carlo above)"),
    "fa": _Kind("bayesneuro.density:FactorAnalysis", ("auto", "newton", "em"), "auto",
                description="FactorAnalysis: maximum likelihood (Newton on the profile likelihood up to 64 "
                            "neurons, else EM)"),
    "custom": _Kind("", ("map", "laplace", "svi", "nuts"), "map",
                    reserved=(), description="your own NumPyro function, fitted by bayesneuro.fit"),
}

_FORMATS = ("npz", "nwb", "spikes")
_REPORTS = ("html", "pdf", "none")
_DTYPES = ("float64", "float32")  # as bayesneuro.io.DTYPES (not imported: io imports arviz)
_EXT_FORMAT = {".npz": "npz", ".nwb": "nwb", ".csv": "spikes"}

# --------------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` table, with `path` resolved.

    Attributes
    ----------
    path : pathlib.Path
        The data file (absolute).
    format : {"npz", "nwb", "spikes"}
        Given, or inferred from the extension (``.npz`` -> npz, ``.nwb`` -> nwb, ``.csv`` ->
        spikes).
    bin_size : float or None
        Seconds; required for spike times and NWB.
    t_start, t_stop : float or None
        Binned span of spike times (seconds).
    nwb : dict
        ``trials`` and ``behavior`` for :func:`bayesneuro.nwb.read_nwb`, when given.
    """

    path: Path
    format: str
    bin_size: float | None = None
    t_start: float | None = None
    t_stop: float | None = None
    nwb: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """The ``[model]`` table: `kind`, constructor `options`, and for ``custom`` `file`/`function`."""

    kind: str
    options: dict = field(default_factory=dict)
    file: Path | None = None
    function: str | None = None


@dataclass(frozen=True)
class FitConfig:
    """The ``[fit]`` table: inference `method` (None: the estimator's default), `seed`, `options`."""

    method: str | None
    seed: int = 0
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OutputConfig:
    """The ``[output]`` table: folder, file stem, report formats, whether to overwrite, and what
    the ``.nc`` holds.

    Attributes
    ----------
    log_likelihood : bool
        Store the pointwise ``log_likelihood`` group (for ``az.loo`` / ``az.compare``); default
        False: it is one value per draw and time bin, most of the file (160 MB for 1000 draws of
        20000 bins), and computing it can take longer than the fit.
    dtype : {"float32", "float64"}
        Precision of the stored draws (posterior, log-likelihood, posterior predictive);
        default ``"float32"``. Its relative rounding, 6e-8, is far below the Monte Carlo
        error of 1000 draws (a posterior mean is known to about 3% of the posterior sd), and
        the CLI's fits run in float32 anyway (JAX's default). ``"float64"`` stores the draws as
        computed (float64 only where JAX runs in 64-bit), doubling the file.
    filters : bool
        GLM only: also store the filters in time (``{name}_filter``), which are derived from
        the stored basis weights (``basis.matrix() @ weights``); default False: the coupling
        filters of 30 neurons are 3.3 times the size of their weights on 3 basis functions.
    """

    dir: Path
    name: str
    report: tuple[str, ...] = ("html",)
    overwrite: bool = False
    log_likelihood: bool = False
    dtype: str = "float32"
    filters: bool = False

    @property
    def paths(self) -> dict[str, Path]:
        """Files written, in the order they are moved into place: ``nc`` then each report."""
        out = {"nc": self.dir / f"{self.name}.nc"}
        for fmt in self.report:
            out[fmt] = self.dir / f"{self.name}.{fmt}"
        return out


@dataclass(frozen=True)
class Config:
    """A validated fit configuration.

    Attributes
    ----------
    path : pathlib.Path or None
        The configuration file (None when parsed from a dict).
    source : str
        Its text (stored with the results for provenance).
    raw : dict
        The parsed tables as read.
    data, model, fit, output
        The validated tables.
    """

    path: Path | None
    source: str
    raw: dict
    data: DataConfig
    model: ModelConfig
    fit: FitConfig
    output: OutputConfig

    def with_output(self, *, dir: str | os.PathLike | None = None, overwrite: bool | None = None) -> Config:
        """A copy with the output folder (relative to the working directory) or overwrite changed."""
        import dataclasses

        out = self.output
        if dir is not None:
            out = dataclasses.replace(out, dir=Path(dir).expanduser().resolve())
        if overwrite is not None:
            out = dataclasses.replace(out, overwrite=bool(overwrite))
        return dataclasses.replace(self, output=out)


# ------------------------------------------------------------------------------------ helpers


def _keys(table: Mapping, where: str, valid: tuple[str, ...]) -> None:
    """Reject unknown keys, suggesting the closest valid one."""
    for key in table:
        if key not in valid:
            path = f"{where}.{key}" if where else str(key)
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{path}: unknown key; {hint}(valid keys: {', '.join(valid)})")


def _type_name(types) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", float: "a number",
             dict: "a table", list: "a list"}
    types = types if isinstance(types, tuple) else (types,)
    if float in types:
        types = tuple(t for t in types if t is not int)
    return " or ".join(names.get(t, t.__name__) for t in types)


def _get(table: Mapping, key: str, where: str, types, *, required: bool = False, default: Any = None):
    path = f"{where}.{key}"
    if key not in table or table[key] is None:
        if required:
            raise ConfigError(f"{path}: missing required key")
        return default
    value = table[key]
    types_t = types if isinstance(types, tuple) else (types,)
    ok = isinstance(value, types_t) and not (isinstance(value, bool) and bool not in types_t)
    if float in types_t and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ConfigError(f"{path}: must be {_type_name(types)}, got {type(value).__name__} {value!r}")
    return value


def _table(raw: Mapping, key: str, where: str = "", *, required: bool = False) -> dict:
    path = f"{where}.{key}" if where else key
    if key not in raw or raw[key] is None:
        if required:
            raise ConfigError(f"{path}: missing required table [{path}]")
        return {}
    value = raw[key]
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: must be a table, got {type(value).__name__} {value!r}")
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"{path}: keys must be strings, got {k!r}")
    return dict(value)


def _resolve(root: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


def _choice(value: str, choices, path: str, what: str) -> str:
    if value not in choices:
        close = difflib.get_close_matches(value, list(choices), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{path}: unknown {what} {value!r}{hint}; choose one of {', '.join(choices)}")
    return value


def _params(fn: Callable) -> tuple[dict[str, inspect.Parameter], bool]:
    """Named parameters of a callable (no self) and whether it takes ``**kwargs``."""
    sig = inspect.signature(fn)
    named, var_kw = {}, False
    for name, p in sig.parameters.items():
        if name == "self" or p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
            continue
        named[name] = p
    return named, var_kw


# ------------------------------------------------------------------------- option conversion


def _registry() -> dict[str, type]:
    """Classes a ``{type = "..."}`` table may name: temporal bases and GLM weight priors."""
    from . import bases
    from .glm import priors

    out = {}
    for module in (bases, priors):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and name not in ("Basis", "Prior"):
                out[name] = obj
    return out


def _convert(value: Any, path: str) -> Any:
    """Turn ``{type = "RaisedCosineLog", n_basis = 3, window = 20}`` tables into objects."""
    if isinstance(value, Mapping):
        if "type" in value:
            registry = _registry()
            name = value["type"]
            if not isinstance(name, str):
                raise ConfigError(f"{path}.type: must be a string, got {name!r}")
            lookup = {k.lower(): k for k in registry}
            if name.lower() not in lookup:
                raise ConfigError(
                    f"{path}.type: unknown type {name!r}; choose one of {', '.join(sorted(registry))}"
                )
            cls = registry[lookup[name.lower()]]
            args = {k: _convert(v, f"{path}.{k}") for k, v in value.items() if k != "type"}
            named, _ = _params(cls)
            _keys(args, path, ("type", *named))
            missing = [n for n, p in named.items() if p.default is p.empty and n not in args]
            if missing:
                raise ConfigError(f"{path}.{missing[0]}: missing required argument of {cls.__name__}")
            try:
                return cls(**args)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{path}: {cls.__name__}: {err}") from None
        return {k: _convert(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_convert(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


# ------------------------------------------------------------------------------------ parsing


def _read(path: Path) -> tuple[dict, str]:
    ext = path.suffix.lower()
    if ext not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"config: unknown extension {path.suffix!r} of {path}; use .toml, .yaml or .yml")
    if not path.is_file():
        raise ConfigError(f"config: file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if ext == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config: invalid TOML in {path}: {err}") from None
    else:
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"config: {path.name} is YAML, which needs PyYAML: pip install pyyaml (or use TOML)"
            ) from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"config: invalid YAML in {path}: {err}") from None
        if raw is None:
            raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: the top level of {path} must be a mapping of tables")
    return dict(raw), text


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a fit configuration (TOML, or YAML by extension).

    Parameters
    ----------
    path : str or path-like
        A ``.toml``, ``.yaml`` or ``.yml`` file. Relative paths inside resolve against its
        folder.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        For anything wrong: unreadable file, unknown or misspelt keys, wrong types, missing
        required keys, unknown kinds, methods or options, missing files (with the resolved
        path). The message starts with the key path.

    Examples
    --------
    >>> import os, tempfile
    >>> from bayesneuro.config import load_config
    >>> folder = tempfile.mkdtemp()
    >>> open(os.path.join(folder, "rec.npz"), "wb").close()
    >>> path = os.path.join(folder, "fit.toml")
    >>> with open(path, "w") as fh:
    ...     _ = fh.write('[data]\\npath = "rec.npz"\\nbin_size = 0.01\\n[model]\\nkind = "glm"\\n')
    >>> cfg = load_config(path)
    >>> cfg.fit.method, cfg.output.name, sorted(cfg.output.paths)
    ('map', 'fit', ['html', 'nc'])
    """
    path = Path(path).expanduser().resolve()
    raw, text = _read(path)
    return parse_config(raw, root=path.parent, name=path.stem, source=text, path=path)


def parse_config(
    raw: Mapping, *, root: str | os.PathLike = ".", name: str = "fit", source: str = "",
    path: Path | None = None,
) -> Config:
    """Validate an already parsed configuration (a dict of tables).

    Parameters
    ----------
    raw : mapping
        Tables ``data``, ``model`` and optionally ``fit`` and ``output``.
    root : path-like
        Folder that relative paths resolve against.
    name : str
        Default output name.
    source : str
        Text stored as the configuration's source.
    path : pathlib.Path, optional
        The file it came from.

    Returns
    -------
    Config

    Examples
    --------
    >>> from bayesneuro.config import ConfigError, parse_config
    >>> try:
    ...     parse_config({"data": {"path": "x.npz"}, "model": {"kind": "glmm"}})
    ... except ConfigError as err:
    ...     print(err)
    model.kind: unknown kind 'glmm' (did you mean 'glm'?); choose one of glm, gpfa, plds, hmm, maxent, fa, custom
    """
    root = Path(root).expanduser().resolve()
    _keys(raw, "", ("data", "model", "fit", "output"))
    model = _parse_model(_table(raw, "model", required=True), root)
    fit = _parse_fit(_table(raw, "fit"), model)
    data = _parse_data(_table(raw, "data", required=True), root)
    output = _parse_output(_table(raw, "output"), root, name)
    if output.filters and model.kind != "glm":
        raise ConfigError(
            f"output.filters: only a GLM has filters in time to store (model.kind is {model.kind!r}); "
            "remove the key"
        )
    if model.kind == "gpfa" and fit.method is not None:
        obs = model.options.get("observation", "gaussian")
        allowed = ("em",) if obs == "gaussian" else ("map", "laplace", "svi", "nuts")
        if fit.method not in allowed:
            raise ConfigError(
                f"fit.method: {fit.method!r} does not fit GPFA with observation={obs!r}; "
                f"choose one of {', '.join(allowed)}"
            )
    return Config(path, source, dict(raw), data, model, fit, output)


def _parse_data(t: dict, root: Path) -> DataConfig:
    _keys(t, "data", ("path", "format", "bin_size", "t_start", "t_stop", "trials", "behavior"))
    rel = _get(t, "path", "data", str, required=True)
    path = _resolve(root, rel)
    fmt = _get(t, "format", "data", str)
    if fmt is None:
        fmt = _EXT_FORMAT.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(
                f"data.format: cannot infer the format of {path.name!r} from its extension; "
                f"set data.format to one of {', '.join(_FORMATS)}"
            )
    else:
        _choice(fmt, _FORMATS, "data.format", "format")
    if not path.is_file():
        raise ConfigError(f"data.path: file not found: {path}")
    bin_size = _get(t, "bin_size", "data", float)
    if bin_size is not None and not (np.isfinite(bin_size) and bin_size > 0):
        raise ConfigError(f"data.bin_size: must be > 0 seconds, got {bin_size}")
    if bin_size is None and fmt in ("nwb", "spikes"):
        what = "spike times" if fmt == "spikes" else "NWB files"
        raise ConfigError(f"data.bin_size: missing required key (bin width in seconds, needed to bin {what})")
    t_start = _get(t, "t_start", "data", float)
    t_stop = _get(t, "t_stop", "data", float)
    nwb = {}
    for key in ("trials", "behavior"):
        if key in t:
            if fmt != "nwb":
                raise ConfigError(f"data.{key}: only for data.format = 'nwb'")
            nwb[key] = t[key]
    if (t_start is not None or t_stop is not None) and fmt == "nwb":
        raise ConfigError("data.t_start: not for data.format = 'nwb'")
    return DataConfig(path, fmt, bin_size, t_start, t_stop, nwb)


def _parse_model(t: dict, root: Path) -> ModelConfig:
    _keys(t, "model", ("kind", "options", "file", "function"))
    kind = _choice(_get(t, "kind", "model", str, required=True), tuple(KINDS), "model.kind", "kind")
    options = _table(t, "options", "model")
    if kind != "custom":
        for key in ("file", "function"):
            if key in t:
                raise ConfigError(f"model.{key}: only for model.kind = 'custom'")
        spec = KINDS[kind]
        named, _ = _params(spec.cls().__init__)
        valid = tuple(n for n in named if n not in spec.reserved)
        for key in options:
            if key in spec.reserved:
                where = "fit.method" if key == "method" else "--quiet / BAYESNEURO_PROGRESS"
                raise ConfigError(f"model.options.{key}: set by {where}, not here")
        _keys(options, "model.options", valid)
        missing = [n for n in valid if named[n].default is named[n].empty and n not in options]
        if missing:
            raise ConfigError(f"model.options.{missing[0]}: missing required option of kind {kind!r}")
        return ModelConfig(kind, options)
    rel = _get(t, "file", "model", str, required=True)
    file = _resolve(root, rel)
    if not file.is_file():
        raise ConfigError(f"model.file: file not found: {file}")
    function = _get(t, "function", "model", str, default="model")
    return ModelConfig(kind, options, file, function)


def _parse_fit(t: dict, model: ModelConfig) -> FitConfig:
    _keys(t, "fit", ("method", "seed", "options"))
    spec = KINDS[model.kind]
    method = _get(t, "method", "fit", str)
    if method is None:
        method = spec.default_method
    else:
        if method not in spec.methods:
            from .infer import METHODS

            known = set(METHODS) | {m for k in KINDS.values() for m in k.methods}
            if method in known:
                raise ConfigError(
                    f"fit.method: kind {model.kind!r} cannot be fitted by {method!r}; "
                    f"choose one of {', '.join(spec.methods)}"
                )
            _choice(method, spec.methods, "fit.method", "method")
    seed = _get(t, "seed", "fit", int, default=0)
    if seed < 0:
        raise ConfigError(f"fit.seed: must be >= 0, got {seed}")
    options = _table(t, "options", "fit")
    valid = _fit_options(model, method)
    if options and not valid:
        raise ConfigError(
            f"fit.options: kind {model.kind!r} takes no fit options; its settings go in "
            "model.options"
        )
    _keys(options, "fit.options", tuple(sorted(valid)))
    return FitConfig(method, seed, options)


def _fit_options(model: ModelConfig, method: str | None) -> set[str]:
    kind = model.kind
    if kind in ("glm", "custom"):
        out = _infer_options(method)
        return out | {"neurons"} if kind == "glm" else out
    if kind == "hmm":  # MAP restarts, then the method's own options for laplace / nuts
        return {"n_restarts", "max_iter"} | (set() if method == "map" else _infer_options(method) - {"max_iter"})
    if kind == "maxent":
        return {"num_samples", "n_chains", "max_iter", "learning_rate", "n_sweeps", "n_samples_mc", "ais_chains",
                "ais_temperatures"}
    if kind == "fa":
        return {"max_iter", "tol", "init"}
    if kind == "gpfa":
        if method is None:
            method = "em" if model.options.get("observation", "gaussian") == "gaussian" else "map"
        return {"max_iter", "tol", "squarem"} if method == "em" else _infer_options(method)
    if kind == "plds":
        extra = {"max_iter", "tol", "max_newton", "newton_tol"} if method == "laplace-em" else _infer_options(method)
        return {"smoothing"} | extra
    return set()


def _parse_output(t: dict, root: Path, default_name: str) -> OutputConfig:
    _keys(t, "output", ("dir", "name", "report", "overwrite", "log_likelihood", "dtype", "filters"))
    folder = _resolve(root, _get(t, "dir", "output", str, default="results"))
    name = _get(t, "name", "output", str, default=default_name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(
            f"output.name: {name!r} must be a plain file stem (letters, digits, '.', '_', '-'; no folders)"
        )
    report = _get(t, "report", "output", (str, list), default="html")
    reports = [report] if isinstance(report, str) else list(report)
    for i, r in enumerate(reports):
        if not isinstance(r, str):
            raise ConfigError(f"output.report[{i}]: must be a string, got {r!r}")
        _choice(r, _REPORTS, "output.report", "report format")
    if "none" in reports:
        if len(reports) > 1:
            raise ConfigError("output.report: 'none' cannot be combined with other formats")
        reports = []
    overwrite = _get(t, "overwrite", "output", bool, default=False)
    log_likelihood = _get(t, "log_likelihood", "output", bool, default=False)
    dtype = _choice(_get(t, "dtype", "output", str, default="float32"), _DTYPES, "output.dtype", "dtype")
    filters = _get(t, "filters", "output", bool, default=False)
    return OutputConfig(folder, name, tuple(dict.fromkeys(reports)), overwrite, log_likelihood, dtype, filters)


# -------------------------------------------------------------------------------------- data


def _npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise ConfigError(
                f"data.path: {path} holds object arrays, which are not read (no pickle); save "
                "strings as fixed-width arrays, e.g. np.array(ids, dtype=str)"
            ) from None
        raise ConfigError(f"data.path: cannot read {path} as .npz: {err}") from None
    except (OSError, EOFError) as err:
        raise ConfigError(f"data.path: cannot read {path} as .npz: {err}") from None


def _scalar(arrays: dict, key: str, path: Path) -> float | None:
    if key not in arrays:
        return None
    a = arrays[key]
    if a.size != 1:
        raise ConfigError(f"data.path: array {key!r} in {path.name} must be a single number")
    return float(a.reshape(()))


def _ids(values: np.ndarray) -> np.ndarray:
    """CSV unit labels: integers when all are, else strings."""
    try:
        as_int = np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.array([str(v).strip() for v in values])
    return as_int


_TIME_COLS = ("time", "times", "spike_time", "spike_times", "t")
_UNIT_COLS = ("unit", "units", "unit_id", "unit_ids", "neuron", "neuron_id", "cluster", "cluster_id")


def _csv_spikes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].lstrip().startswith("#")]
    if not rows:
        raise ConfigError(f"data.path: {path} has no rows")
    head = [c.strip().lower() for c in rows[0]]
    try:
        float(head[0])
        header = False
    except ValueError:
        header = True
    if header:
        ti = next((head.index(c) for c in _TIME_COLS if c in head), None)
        ui = next((head.index(c) for c in _UNIT_COLS if c in head), None)
        if ti is None or ui is None:
            raise ConfigError(
                f"data.path: {path.name} needs a 'time' and a 'unit' column, found columns {head}"
            )
        rows = rows[1:]
    else:
        ti, ui = 0, 1
    try:
        times = np.array([float(r[ti]) for r in rows])
        units = _ids(np.array([r[ui] for r in rows]))
    except (ValueError, IndexError) as err:
        raise ConfigError(f"data.path: malformed row in {path.name}: {err}") from None
    return times, units


def load_data(config: Config | DataConfig):
    """Load the recording a configuration names, as a :class:`~bayesneuro.SpikeData`.

    ``format = "npz"`` reads arrays ``counts`` ``(time, neuron)`` or ``spike_times`` with
    ``unit_ids``; optional ``bin_size``, ``neuron_ids``, ``covariates`` ``(time, feature)``,
    ``feature_names``, ``trial_ids`` (with counts), ``trial_intervals`` ``(trial, 2)`` (with spike
    times), ``t_start``, ``t_stop``. Other arrays are ignored. Nothing is unpickled.
    ``format = "spikes"`` reads spike times and units: a CSV with ``time`` and ``unit`` columns
    (or two unnamed columns in that order), or an ``.npz`` as above. ``format = "nwb"`` goes
    through :func:`bayesneuro.nwb.read_nwb`.

    Parameters
    ----------
    config : Config or DataConfig

    Returns
    -------
    SpikeData

    Raises
    ------
    ConfigError
        For unreadable or malformed data, including the data errors SpikeData raises
        (negative counts, mismatched lengths, ...): the message names ``data.path`` and the
        problem.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from bayesneuro.config import DataConfig, load_data
    >>> path = os.path.join(tempfile.mkdtemp(), "rec.npz")
    >>> np.savez(path, counts=np.array([[0, 1], [2, 0], [1, 1]]), bin_size=0.05)
    >>> load_data(DataConfig(path=__import__("pathlib").Path(path), format="npz"))
    SpikeData(n_time=3, n_neuron=2, bin_size=0.05 s, time [0, 0.15) s)
    """
    from .data import SpikeData

    d = config.data if isinstance(config, Config) else config
    path = d.path
    if d.format == "nwb":
        return _load_nwb(d)
    try:
        if d.format == "spikes" and path.suffix.lower() == ".csv":
            times, units = _csv_spikes(path)
            return SpikeData.from_spike_times(
                times, units, bin_size=d.bin_size, t_start=d.t_start, t_stop=d.t_stop
            )
        arrays = _npz(path)
        file_bin = _scalar(arrays, "bin_size", path)
        covariates = arrays.get("covariates")
        names = arrays.get("feature_names")
        names = None if names is None else [str(n) for n in np.atleast_1d(names)]
        neuron_ids = arrays.get("neuron_ids")
        spikes = "spike_times" in arrays and "unit_ids" in arrays
        if d.format == "npz" and "counts" in arrays:
            if d.t_start is not None or d.t_stop is not None:
                raise ConfigError("data.t_start: only for spike times (the file holds counts)")
            bin_size = d.bin_size
            if file_bin is not None and bin_size is not None and not np.isclose(file_bin, bin_size):
                raise ConfigError(
                    f"data.bin_size: {bin_size} disagrees with bin_size = {file_bin} stored in {path.name}"
                )
            bin_size = bin_size if bin_size is not None else file_bin
            if bin_size is None:
                raise ConfigError(
                    f"data.bin_size: missing required key ({path.name} holds counts but no bin_size array)"
                )
            t0 = _scalar(arrays, "t_start", path)
            return SpikeData.from_counts(
                arrays["counts"], bin_size=bin_size, t_start=0.0 if t0 is None else t0,
                neuron_ids=neuron_ids, covariates=covariates, feature_names=names,
                trial_ids=arrays.get("trial_ids"),
            )
        if not spikes:
            want = "spike_times and unit_ids" if d.format == "spikes" else "counts, or spike_times and unit_ids"
            raise ConfigError(f"data.path: {path.name} has no {want} (arrays found: {sorted(arrays)})")
        if d.bin_size is None:
            raise ConfigError(
                f"data.bin_size: missing required key (bin width in seconds, needed to bin the spike "
                f"times in {path.name})"
            )
        if "trial_ids" in arrays:
            raise ConfigError(
                f"data.path: {path.name}: trial_ids go with counts; with spike times give "
                "trial_intervals (trial, 2) in seconds"
            )
        t_start = d.t_start if d.t_start is not None else _scalar(arrays, "t_start", path)
        t_stop = d.t_stop if d.t_stop is not None else _scalar(arrays, "t_stop", path)
        return SpikeData.from_spike_times(
            arrays["spike_times"], arrays["unit_ids"], bin_size=d.bin_size, t_start=t_start,
            t_stop=t_stop, neuron_ids=neuron_ids, covariates=covariates, feature_names=names,
            trial_intervals=arrays.get("trial_intervals"),
        )
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"data.path: {path}: {err}") from None


def _load_nwb(d: DataConfig):
    try:
        from .nwb import read_nwb
    except ModuleNotFoundError as err:
        if err.name in ("bayesneuro.nwb",):
            raise ConfigError(
                "data.format: NWB input needs bayesneuro.nwb, which this installation lacks"
            ) from None
        raise ConfigError(
            f"data.format: NWB input needs {err.name}: pip install 'bayesneuro[nwb]'"
        ) from None
    try:
        return read_nwb(d.path, bin_size=d.bin_size, **d.nwb)
    except ModuleNotFoundError as err:
        raise ConfigError(f"data.format: NWB input needs {err.name}: pip install 'bayesneuro[nwb]'") from None
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"data.path: {d.path}: {err}") from None


# ------------------------------------------------------------------------------------- model


def _import_function(file: Path, function: str) -> Callable:
    """Import ``function`` from a Python file (a fresh module each time)."""
    mod_name = f"_bayesneuro_custom_{abs(hash(str(file))):x}"
    spec = importlib.util.spec_from_file_location(mod_name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"model.file: cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any error in the user's file is a config problem
        raise ConfigError(f"model.file: importing {file} failed: {type(err).__name__}: {err}") from None
    finally:
        try:
            sys.path.remove(str(file.parent))
        except ValueError:
            pass
    fn = getattr(module, function, None)
    if fn is None or not callable(fn):
        found = sorted(n for n, v in vars(module).items()
                       if inspect.isfunction(v) and v.__module__ == mod_name and not n.startswith("_"))
        raise ConfigError(
            f"model.function: no function {function!r} in {file}"
            + (f"; functions there: {', '.join(found)}" if found else "")
        )
    return fn


def custom_model_data(fn: Callable, data, options: Mapping | None = None) -> dict:
    """Keyword arguments a custom model gets: ``counts``, ``bin_size`` and what it asks for.

    ``counts`` and ``bin_size`` always; ``covariates`` ``(time, feature)`` and
    ``trial_index`` (the 0-based trial of each bin) when the function has parameters of those
    names; then `options` (``model.options``, constants such as priors' hyper-parameters).

    Raises
    ------
    ConfigError
        If the function cannot take ``counts`` / ``bin_size``, an option is not one of its
        parameters, or it needs covariates the data lack.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro import SpikeData
    >>> from bayesneuro.config import custom_model_data
    >>> def rates(counts=None, *, bin_size, shape=2.0):
    ...     pass
    >>> data = SpikeData.from_counts(np.ones((4, 2)), bin_size=0.1)
    >>> sorted(custom_model_data(rates, data, {"shape": 3.0}))
    ['bin_size', 'counts', 'shape']
    """
    named, var_kw = _params(fn)
    for need in ("counts", "bin_size"):
        if need not in named and not var_kw:
            raise ConfigError(
                f"model.function: {fn.__name__} must take keyword arguments counts= and bin_size= "
                f"(its parameters: {', '.join(named)})"
            )
    out = {"counts": np.asarray(data.counts), "bin_size": float(data.bin_size)}
    if "covariates" in named:
        if data.covariates is None:
            if named["covariates"].default is named["covariates"].empty:
                raise ConfigError(
                    f"model.function: {fn.__name__} needs covariates, but the data have none"
                )
        else:
            out["covariates"] = np.asarray(data.covariates)
    if "trial_index" in named:
        out["trial_index"] = np.asarray(data.segment_ids)
    options = dict(options or {})
    for key in options:
        if key in out:
            raise ConfigError(f"model.options.{key}: set from the data, not here")
    if not var_kw:
        _keys(options, "model.options", tuple(n for n in named if n not in out))
    out.update(options)
    missing = [n for n, p in named.items()
               if p.default is p.empty and p.kind is not p.VAR_KEYWORD and n not in out]
    if missing:
        raise ConfigError(
            f"model.options.{missing[0]}: missing; {fn.__name__} needs it and the data do not supply it"
        )
    return out


def build_model(config: Config, *, progress: bool | None = None):
    """The unfitted estimator of ``[model]``, or the custom NumPyro function.

    Parameters
    ----------
    config : Config
    progress : bool, optional
        For estimators that take ``progress`` in their constructor.

    Returns
    -------
    estimator or callable
        ``PoissonGLM``, ``GPFA``, ``PoissonLDS``, ``PoissonHMM``, ``MaxEnt``,
        ``FactorAnalysis`` (structure only: the method and its options go to ``fit``); for
        ``custom`` the model function.

    Raises
    ------
    ConfigError
        If the constructor rejects the options (the message names ``model.options``) or the
        custom function cannot be imported.

    Examples
    --------
    >>> from bayesneuro.config import build_model, parse_config
    >>> import numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "rec.npz"); np.savez(path, counts=np.ones((2, 2)))
    >>> cfg = parse_config({"data": {"path": path, "bin_size": 0.01}, "model": {"kind": "glm",
    ...     "options": {"history_basis": {"type": "RaisedCosineLog", "n_basis": 3, "window": 20}}}})
    >>> build_model(cfg)
    PoissonGLM(history_basis=RaisedCosineLog(n_basis=3, ...))
    """
    m = config.model
    if m.kind == "custom":
        return _import_function(m.file, m.function)
    spec = KINDS[m.kind]
    options = {k: _convert(v, f"model.options.{k}") for k, v in m.options.items()}
    cls = spec.cls()
    named, _ = _params(cls.__init__)
    if "progress" in named:
        options["progress"] = progress
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.options: {cls.__name__}: {err}") from None
