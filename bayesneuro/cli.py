"""Command-line entry point: ``bayesneuro demo``, ``bayesneuro fit CONFIG`` and ``bayesneuro --version``.

``bayesneuro fit CONFIG`` reads a TOML or YAML fit configuration (:mod:`bayesneuro.config`,
schema in ``docs/cli.md``), loads the data, builds and fits the model with
``key=jax.random.key(seed)``, and writes ``<output.dir>/<output.name>.nc``
(:func:`bayesneuro.io.save`) and a report (:func:`bayesneuro.report.write_report`). Everything is
written into a temporary folder inside the output folder first and moved into place at the end,
so an interrupted run never leaves a half-written result. The same run is available from Python
as :func:`run_fit`. The ``.nc`` holds the pointwise log-likelihood only when ``[output]
log_likelihood = true`` (it is not even computed otherwise), a GLM's filters in time (derived
from its basis weights) only when ``[output] filters = true``, and the draws in float32 unless
``[output] dtype = "float64"``; the size of each file written is printed.

This module imports nothing heavy at import time: ``bayesneuro --help``, ``bayesneuro --version``
and ``bayesneuro fit --help`` answer without loading JAX, NumPyro or ArviZ.

Exit codes: 0 success; 1 the fit itself failed (the message says why); 2 a configuration or data
problem (``bayesneuro fit: error: <key path>: <problem>``, no traceback) or bad arguments;
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["FitRun", "fit_model", "main", "run_fit"]


# ------------------------------------------------------------------------------------ fitting


def fit_model(config, model, data, *, progress: bool | None = None):
    """Fit a model built by :func:`bayesneuro.config.build_model` as the configuration says.

    Parameters
    ----------
    config : bayesneuro.config.Config
    model : estimator or callable
        From :func:`~bayesneuro.config.build_model`.
    data : SpikeData
        From :func:`~bayesneuro.config.load_data`.
    progress : bool, optional
        Progress bars (default from ``BAYESNEURO_PROGRESS``).

    Returns
    -------
    idata : arviz.InferenceData
        With the ``log_likelihood`` group only when ``config.output.log_likelihood`` (and the
        model provides one); estimators whose ``to_inference_data`` takes ``log_likelihood=``
        do not compute it otherwise. A GLM's filters in time only when
        ``config.output.filters``.
    fitted : estimator or FitResult
        The fitted estimator; for a custom model the :class:`~bayesneuro.infer.FitResult`.
    """
    import inspect

    import jax

    from .config import custom_model_data
    from .infer import fit as _fit

    kind, method = config.model.kind, config.fit.method
    key = jax.random.key(config.fit.seed)
    opts = dict(config.fit.options)
    want_ll = config.output.log_likelihood
    if kind == "custom":
        kwargs = custom_model_data(model, data, config.model.options)
        dims = {"covariates": ["time", "feature"]} if "covariates" in kwargs else {}
        coords = {k: v for k, v in data.coords.items() if k != "trial"}
        res = _fit(model, method=method, key=key, coords=coords, dims=dims, progress=progress,
                   model_kwargs=kwargs, **opts)
        return res.to_inference_data(log_likelihood=want_ll), res
    model.fit(data, method=method, key=key, progress=progress, **opts)
    params = inspect.signature(model.to_inference_data).parameters
    if "log_likelihood" in params:
        extra = {"filters": config.output.filters} if "filters" in params else {}
        return model.to_inference_data(log_likelihood=want_ll, **extra), model
    idata = model.to_inference_data()
    if not want_ll and "log_likelihood" in idata.groups():
        from .io import slim

        idata = slim(idata, log_likelihood=False)  # a copy: the model may cache its idata
    return idata, model


def _size(path) -> str:
    """A file's size for messages: ``"12.3 MB"`` (``"4.1 kB"`` below 0.1 MB)."""
    n = os.path.getsize(path)
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


class FitRun(dict):
    """What :func:`run_fit` wrote: a dict of format (``"nc"``, ``"html"``, ``"pdf"``) to path,
    with the InferenceData, the fitted model and the data as attributes."""

    idata: Any = None
    model: Any = None
    data: Any = None


def _check_outputs(out) -> None:
    from .config import ConfigError

    existing = [p for p in out.paths.values() if p.exists()]
    if existing and not out.overwrite:
        names = ", ".join(str(p) for p in existing)
        raise ConfigError(
            f"output: {names} already exist{'s' if len(existing) == 1 else ''}; set "
            "output.overwrite = true, pass --overwrite, or choose another output.name / --out"
        )
    for p in existing:
        if p.is_dir():
            raise ConfigError(f"output: {p} is a folder, not a file")


def run_fit(
    config,
    *,
    out: str | os.PathLike | None = None,
    overwrite: bool | None = None,
    progress: bool | None = None,
    log=None,
) -> FitRun:
    """Run a fit configuration end to end: load, fit, save the ``.nc`` and write the report.

    The results are written into a temporary folder inside the output folder and moved into
    place (``os.replace``, one file at a time: the ``.nc`` first, then the reports) only when
    all of them are complete. An interruption (including ``KeyboardInterrupt``) removes the
    temporary folder and leaves existing results untouched.

    Parameters
    ----------
    config : str, path-like or bayesneuro.config.Config
        A configuration file or an already loaded configuration.
    out : path-like, optional
        Output folder instead of ``output.dir`` (relative to the working directory).
    overwrite : bool, optional
        Overrides ``output.overwrite``.
    progress : bool, optional
        Progress bars (default from ``BAYESNEURO_PROGRESS``).
    log : callable, optional
        Called with one-line progress messages (default: none).

    Returns
    -------
    FitRun
        Format to path of each file written; ``.idata``, ``.model``, ``.data``.

    Raises
    ------
    bayesneuro.config.ConfigError
        Bad configuration or data, or outputs that exist without overwrite (checked before
        fitting).
    """
    from . import io as _io
    from . import report as _report
    from .config import Config, build_model, load_config, load_data

    say = log or (lambda msg: None)
    cfg = config if isinstance(config, Config) else load_config(config)
    cfg = cfg.with_output(dir=out, overwrite=overwrite)
    outcfg = cfg.output
    _check_outputs(outcfg)
    data = load_data(cfg)
    say(f"data: {data!r}")
    model = build_model(cfg, progress=progress)
    created = []
    folder = outcfg.dir
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    tmp = None
    caught: list[str] = []
    try:
        say(f"fitting {cfg.model.kind} by {cfg.fit.method or 'its default method'} (seed {cfg.fit.seed})")
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("default")
            idata, fitted = fit_model(cfg, model, data, progress=progress)
        elapsed = time.perf_counter() - t0
        for w in records:
            caught.append(f"{w.category.__name__}: {w.message}")
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        say(f"fitted in {elapsed:.1f} s")
        # draws in "posterior"; a point fit (EM, Laplace-EM, plug-in) in "point_estimate"
        main = idata.posterior if "posterior" in idata.groups() else idata.point_estimate
        main.attrs["bayesneuro_config"] = cfg.source
        if cfg.path is not None:
            main.attrs["bayesneuro_config_path"] = str(cfg.path)
        outcfg.dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{outcfg.name}.", suffix=".partial", dir=outcfg.dir))
        staged = {}
        for fmt, final in outcfg.paths.items():
            staged[fmt] = tmp / final.name
        t0 = time.perf_counter()
        _io.save(idata, staged["nc"], log_likelihood=outcfg.log_likelihood,
                 dtype=None if outcfg.dtype == "float64" else outcfg.dtype)
        say(f"saved {outcfg.paths['nc'].name} ({_size(staged['nc'])}) in {time.perf_counter() - t0:.1f} s")
        title = f"bayesneuro fit: {cfg.path.name if cfg.path else outcfg.name}"
        for fmt in outcfg.report:
            _report.write_report(
                idata, staged[fmt], title=title, config=cfg, model=fitted, data=data,
                notes=caught, elapsed=elapsed,
            )
        # everything is complete: move into place, the .nc first, the reports last
        result = FitRun()
        for fmt, final in outcfg.paths.items():
            os.replace(staged[fmt], final)
            result[fmt] = final
        result.idata, result.model, result.data = idata, fitted, data
        created = []
        return result
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # folders this run made, innermost first, if still empty
            try:
                folder.rmdir()
            except OSError:
                break


# ---------------------------------------------------------------------------------- the CLI


def _fit_command(args) -> int:
    import numpy as np

    from .config import ConfigError
    from .infer.fit import progress_default

    progress = (not args.quiet) and progress_default()
    os.environ.setdefault("MPLBACKEND", "Agg")
    prog = "bayesneuro fit"

    def log(msg):
        if not args.quiet:
            print(f"{prog}: {msg}", file=sys.stderr)

    try:
        written = run_fit(args.config, out=args.out, overwrite=True if args.overwrite else None,
                          progress=progress, log=log)
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no results were written", file=sys.stderr)
        return 130
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
        print(f"{prog}: error: the fit failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    for path in written.values():
        print(f"{prog}: wrote {path} ({_size(path)})", file=sys.stderr if args.quiet else sys.stdout)
    return 0


# the inference methods of bayesneuro.infer.METHODS, spelt out so that "--help" (argparse's) and
# "--version" do not import JAX (tests/test_cli.py checks that the two agree)
_METHODS = ("map", "laplace", "svi", "nuts")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bayesneuro")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from . import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    """Run the ``bayesneuro`` command line; returns the exit code.

    Examples
    --------
    >>> from bayesneuro.cli import main
    >>> main(["fit", "no-such-config.toml"])  # doctest: +SKIP
    2
    """
    parser = argparse.ArgumentParser(prog="bayesneuro", description="Probabilistic programming for neural data.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate a small population, fit it and print a summary")
    demo.add_argument("--method", choices=_METHODS, default="nuts")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--fast", action="store_true", help="smaller sampler settings")
    fit = sub.add_parser(
        "fit", help="fit a model described by a TOML/YAML config and write <name>.nc and a report",
        description="Fit the model a TOML or YAML configuration describes (see docs/cli.md) and "
        "write <output.dir>/<output.name>.nc and the report.",
    )
    fit.add_argument("config", help="configuration file (.toml, .yaml or .yml)")
    fit.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    fit.add_argument("--out", metavar="DIR", help="output folder instead of output.dir")
    fit.add_argument("--overwrite", action="store_true", help="replace existing results")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(method=args.method, seed=args.seed, progress=not args.quiet, fast=args.fast)
        return 0
    if args.command == "fit":
        return _fit_command(args)
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
