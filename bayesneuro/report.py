"""Fit reports: one self-contained HTML file (or a PDF) per fit.

:func:`write_report` turns an ``arviz.InferenceData`` (and, when given, the configuration, the
fitted model and the data) into a report with a header, the configuration, a data summary, the
``arviz.summary`` table, convergence diagnostics (:func:`bayesneuro.diagnostics.check`) and the
standard figures: a forest plot of the top-level parameters, a trace plot for NUTS and SVI, the
ELBO of SVI fits and the model's own plots (GLM filters and coupling, latent loadings, variance
explained and dynamics eigenvalues, HMM state probabilities, max-ent moments). Figures are
embedded as base64 PNG, so the HTML needs no other file. A figure that fails becomes a note in
the report instead of an error. ``bayesneuro fit`` writes one for every fit.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_value", "summary_table", "top_variables", "write_report"]

MAX_ROWS = 50
_DPI = 80


def format_value(v: Any) -> str:
    """How numbers appear in report tables: 4 significant digits.

    Examples
    --------
    >>> from bayesneuro.report import format_value
    >>> format_value(3.14159), format_value(12345.678), format_value(float("nan")), format_value(7)
    ('3.142', '1.235e+04', 'nan', '7')
    """
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def _n_samples(idata) -> tuple[int, int]:
    post = idata.posterior
    return int(post.sizes.get("chain", 1)), int(post.sizes.get("draw", 1))


def _var_size(idata, name: str) -> int:
    da = idata.posterior[name]
    return int(np.prod([n for d, n in da.sizes.items() if d not in ("chain", "draw")], dtype=np.int64))


def top_variables(idata, *, max_size: int = 12, max_vars: int = 6) -> list[str]:
    """The posterior's top-level parameters: numeric variables with at most `max_size` elements.

    Examples
    --------
    >>> import numpy as np, arviz as az
    >>> from bayesneuro.report import top_variables
    >>> idata = az.from_dict(posterior={"mu": np.zeros((1, 5)), "path": np.zeros((1, 5, 100))})
    >>> top_variables(idata)
    ['mu']
    """
    out = []
    for name, da in idata.posterior.data_vars.items():
        if da.dtype.kind in "fiub" and _var_size(idata, name) <= max_size:
            out.append(str(name))
        if len(out) >= max_vars:
            break
    return out


def summary_table(idata, *, max_rows: int = MAX_ROWS):
    """The ``arviz.summary`` rows shown in a report, and a note when rows were left out.

    Variables are taken in posterior order until `max_rows` rows are filled (so a long latent
    path does not cost its full summary). A point fit (a ``point_estimate`` group: MAP, EM) or a
    single draw gives one column, ``estimate``; one chain of independent draws (Laplace, SVI) the posterior statistics; several
    chains (NUTS) also R-hat and ESS.

    Returns
    -------
    table : pandas.DataFrame
    note : str or None

    Examples
    --------
    >>> import numpy as np, arviz as az
    >>> from bayesneuro.report import summary_table
    >>> idata = az.from_dict(posterior={"mu": np.array([[1.5]])})
    >>> table, note = summary_table(idata)
    >>> table.columns.tolist(), float(table.loc["mu", "estimate"]), note
    (['estimate'], 1.5, None)
    """
    import arviz as az
    import pandas as pd

    from .diagnostics import is_point_fit

    if is_point_fit(idata):  # a point_estimate group: its one estimate per element
        idata = _one_draw(idata)
    n_chain, n_draw = _n_samples(idata)
    numeric = [str(n) for n, da in idata.posterior.data_vars.items() if da.dtype.kind in "fiub"]
    total = sum(_var_size(idata, n) for n in numeric)
    chosen, rows = [], 0
    for name in numeric:
        if rows >= max_rows:
            break
        chosen.append(name)
        rows += _var_size(idata, name)
    if not chosen:
        return pd.DataFrame(), "the posterior holds no numeric variables"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n_chain * n_draw == 1:
            t = az.summary(idata, var_names=chosen, kind="stats", stat_funcs={"estimate": np.mean},
                           extend=False)
            table = pd.DataFrame({"estimate": t["estimate"]})
        else:
            kind = "all" if n_chain >= 2 else "stats"
            table = az.summary(idata, var_names=chosen, kind=kind)
    note = None
    if total > len(table.iloc[:max_rows]):
        left = [n for n in numeric if n not in chosen]
        note = f"showing the first {min(max_rows, len(table))} of {total} rows"
        if left:
            note += f"; variables not shown: {', '.join(left)}"
    return table.iloc[:max_rows], note


# ----------------------------------------------------------------------------- the sections


def _config_text(config: Any) -> str | None:
    if config is None:
        return None
    if isinstance(config, str):
        return config
    source = getattr(config, "source", None)
    if isinstance(source, str) and source:
        return source
    if isinstance(config, Mapping):
        return json.dumps(config, indent=2, default=str)
    return repr(config)


def _data_rows(data: Any) -> list[tuple[str, str]]:
    if data is None:
        return []
    rows = []
    for label, attr, unit in (
        ("time bins", "n_time", ""), ("neurons", "n_neuron", ""), ("bin size", "bin_size", " s"),
        ("duration", "duration", " s"), ("trials", "n_trial", ""), ("covariates", "n_feature", ""),
    ):
        value = getattr(data, attr, None)
        if value is not None:
            rows.append((label, format_value(value) + unit))
    counts = getattr(data, "counts", None)
    if counts is not None:
        total = int(np.asarray(counts).sum())
        rows.append(("spikes", str(total)))
        duration = getattr(data, "duration", None)
        n_neuron = getattr(data, "n_neuron", None)
        if duration and n_neuron:
            rows.append(("mean rate", f"{total / duration / n_neuron:.4g} spikes/s per neuron"))
    names = getattr(data, "feature_names", None)
    if names:
        shown = ", ".join(map(str, list(names)[:10])) + (" ..." if len(names) > 10 else "")
        rows.append(("covariate names", shown))
    return rows


def _fit_rows(idata, method: str | None, elapsed: float | None) -> list[tuple[str, str]]:
    n_chain, n_draw = _n_samples(idata)
    rows = [("method", method or "unknown"), ("chains x draws", f"{n_chain} x {n_draw}")]
    attrs = idata.posterior.attrs
    for k in ("converged", "n_iter", "objective", "log_marginal_likelihood", "log_likelihood"):
        if k in attrs:
            v = attrs[k]
            rows.append((k, str(bool(v)) if k == "converged" else format_value(v)))
    if elapsed is not None:
        rows.append(("fit time", f"{elapsed:.1f} s"))
    return rows


def _one_draw(idata):
    """A point fit's ``point_estimate`` as the single draw the report's tables and figures take
    (for rendering only: the report labels it "point estimate", never a posterior)."""
    import arviz as az

    post = idata.point_estimate.expand_dims(chain=[0], draw=[0])
    groups = {g: idata[g] for g in idata.groups() if g not in ("point_estimate", "log_likelihood")}
    return az.InferenceData(posterior=post, warn_on_custom_groups=False, **groups)


def _diagnostics(idata, method: str | None) -> tuple[list[str], Any]:
    """Lines of text and a table (or None) of diagnostics."""
    import pandas as pd

    from .diagnostics import check, independent_draws

    n_chain, n_draw = _n_samples(idata)
    if n_chain * n_draw == 1:
        return [("point estimate: no diagnostics (one draw; fit by laplace, svi or nuts for "
                 "posterior uncertainty)")], None
    diag = check(idata, warn=False)
    lines = []
    independent = n_chain < 2 or independent_draws(idata, method)
    if independent:
        fitted_by = method or idata.posterior.attrs.get("method") or "one chain"
        lines.append(
            f"{n_chain * n_draw} independent draws from one approximation ({fitted_by}): "
            "R-hat needs MCMC chains and ESS does not measure the quality of the approximation."
        )
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        lines.append(f"divergent transitions: {diag.n_divergent}")
    if diag.ok:
        lines.append("" if independent else "no problems flagged")
    lines.extend(diag.problems)
    names = sorted(set(diag.rhat) | set(diag.ess_bulk))
    table = None
    if names:
        table = pd.DataFrame({
            "max R-hat": [diag.rhat.get(n, np.nan) for n in names],
            "min bulk ESS": [diag.ess_bulk.get(n, np.nan) for n in names],
            "min tail ESS": [diag.ess_tail.get(n, np.nan) for n in names],
        }, index=names)
        if independent:
            table = table.drop(columns="max R-hat")
        table = table.iloc[:MAX_ROWS]
    return [line for line in lines if line], table


# ---------------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _forest(idata, names: list[str]):
    import arviz as az

    plt = _pyplot()
    n_chain, n_draw = _n_samples(idata)
    rows = sum(_var_size(idata, n) for n in names)
    height = min(8.0, 0.8 + 0.22 * rows)
    if n_chain * n_draw == 1:  # a point estimate: a dot per element
        fig, ax = plt.subplots(figsize=(5.0, height))
        labels, values = [], []
        post = idata.posterior
        for n in names:
            da = post[n].isel(chain=0, draw=0)
            flat = np.asarray(da.values, dtype=float).ravel()
            idx = list(np.ndindex(da.shape)) if da.ndim else [()]
            for i, v in zip(idx, flat):
                lab = [str(da[d].values[j]) if d in da.coords else str(j) for d, j in zip(da.dims, i)]
                labels.append(n + (f"[{', '.join(lab)}]" if lab else ""))
                values.append(v)
        y = np.arange(len(values))[::-1]
        ax.plot(values, y, "o", ms=4)
        ax.set_yticks(y, labels, fontsize=7)
        ax.axvline(0.0, color="0.7", lw=0.8)
        ax.set_title("point estimates", fontsize=9)
        fig.tight_layout()
        return fig
    az.plot_forest(idata, var_names=names, combined=True, figsize=(5.0, height), textsize=7)


def _trace(idata, names: list[str]):
    import arviz as az

    names = names[:4]
    az.plot_trace(idata, var_names=names, compact=True, figsize=(8.0, 1.6 * len(names)))


def _elbo(result):
    from .plotting import elbo_trace

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 2.5))
    elbo_trace(result, ax=ax)
    fig.tight_layout()


def _model_figures(model: Any, data: Any) -> list[tuple[str, Callable[[], Any]]]:
    """The model's own plots, as (caption, function drawing them)."""
    name = type(model).__name__
    out: list[tuple[str, Callable[[], Any]]] = []
    if name == "PoissonGLM":
        from .glm import plotting as gp

        ids = list(getattr(model, "neuron_ids_", []))[:4]
        sources = list(getattr(model, "source_ids_", ids))[:4]
        out.append(("GLM filters (first neurons)",
                    lambda: gp.plot_filters(model, neurons=ids, sources=sources, max_panels=20)))
        if getattr(model, "coupling", False):
            out.append(("coupling matrix", lambda: gp.plot_coupling(model)))
    elif name in ("GPFA", "PoissonLDS"):
        from .latent import plotting as lp

        out.append(("loadings", lambda: lp.plot_loadings(model)))
        out.append(("variance explained", lambda: lp.plot_variance_explained(model)))
        if name == "PoissonLDS":
            out.append(("dynamics eigenvalues", lambda: lp.plot_eigenvalues(model)))
    elif name == "PoissonHMM" and data is not None:
        def states():
            plt = _pyplot()
            p = np.asarray(model.posterior_states(data))[:2000]
            fig, ax = plt.subplots(figsize=(7.0, 2.2))
            t = np.asarray(data.bin_centers)[: p.shape[0]]
            ax.imshow(p.T, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1,
                      extent=(t[0], t[-1], p.shape[1] - 0.5, -0.5))
            ax.set_xlabel("time (s)")
            ax.set_ylabel("state")
            ax.set_title("posterior state probabilities", fontsize=9)
            fig.tight_layout()

        out.append(("HMM states", states))
    elif name == "MaxEnt" and data is not None:
        from .density import observed_moments, plot_moments

        out.append(("moments: model against data",
                    lambda: plot_moments(observed_moments(data), {model.kind: model})))
    elif name == "FactorAnalysis":
        def loadings():
            plt = _pyplot()
            L = np.asarray(model.loadings_)
            fig, ax = plt.subplots(figsize=(3.0 + 0.3 * L.shape[1], min(6.0, 1.0 + 0.15 * L.shape[0])))
            lim = float(np.abs(L).max()) or 1.0
            im = ax.imshow(L, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_xlabel("latent")
            ax.set_ylabel("neuron")
            fig.colorbar(im, ax=ax)
            fig.tight_layout()

        out.append(("loadings", loadings))
    return out


def _figures(idata, model, data, method) -> list[tuple[str, Callable[[], Any]]]:
    figs: list[tuple[str, Callable[[], Any]]] = []
    names = top_variables(idata)
    n_chain, n_draw = _n_samples(idata)
    if names:
        figs.append(("top-level parameters" if n_chain * n_draw > 1 else "point estimates",
                     lambda: _forest(idata, names)))
        if method in ("nuts", "svi") and n_draw > 1:
            figs.append(("trace", lambda: _trace(idata, names)))
    result = getattr(model, "result_", model)
    if method == "svi" and result is not None and "losses" in getattr(result, "info", {}):
        figs.append(("ELBO", lambda: _elbo(result)))
    if model is not None:
        figs.extend(_model_figures(model, data))
    return figs


def _render(draw: Callable[[], Any]) -> list:
    """Run a plotting function and return the figures it made."""
    plt = _pyplot()
    before = set(plt.get_fignums())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draw()
    except BaseException:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)
        raise
    return [plt.figure(num) for num in sorted(set(plt.get_fignums()) - before)]


def _png(fig) -> str:
    width = float(fig.get_size_inches()[0])
    dpi = min(_DPI, 800.0 / max(width, 1e-3))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 60em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.k, th.k { text-align: left; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #8a5a00; } .meta { color: #666; font-size: 0.9em; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
"""


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th class='k'>{html.escape(k)}</th><td class='k'>{html.escape(v)}</td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


def _df_table(df) -> str:
    cols = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for idx, row in df.iterrows():
        cells = "".join(f"<td>{html.escape(format_value(v))}</td>" for v in row.values)
        body.append(f"<tr><th class='k'>{html.escape(str(idx))}</th>{cells}</tr>")
    return f"<table><tr><th></th>{cols}</tr>{''.join(body)}</table>"


def _sections(idata, *, title, config, model, data, method, notes, elapsed):
    """Everything but the figures, as plain data shared by the HTML and PDF writers."""
    from . import __version__

    table, table_note = summary_table(idata)
    diag_lines, diag_table = _diagnostics(idata, method)
    return {
        "title": title,
        "meta": f"written {_dt.datetime.now().isoformat(timespec='seconds')} by bayesneuro {__version__}",
        "config": _config_text(config),
        "data_rows": _data_rows(data),
        "fit_rows": _fit_rows(idata, method, elapsed),
        "notes": [str(n) for n in (notes or [])],
        "table": table,
        "table_note": table_note,
        "diag_lines": diag_lines,
        "diag_table": diag_table,
    }


def _html(s: dict, figures: list[tuple[str, list[str], str | None]]) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(s['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(s['title'])}</h1><p class='meta'>{esc(s['meta'])}</p>",
    ]
    if s["config"] is not None:
        parts.append(f"<h2>Configuration</h2><pre>{esc(s['config'])}</pre>")
    parts.append("<h2>Data</h2>")
    parts.append(_kv_table(s["data_rows"]) if s["data_rows"] else "<p>no data given</p>")
    parts.append("<h2>Fit</h2>" + _kv_table(s["fit_rows"]))
    if s["notes"]:
        parts.append("<h3>Warnings</h3><ul>" + "".join(f"<li class='note'>{esc(n)}</li>" for n in s["notes"]) + "</ul>")
    parts.append("<h2>Diagnostics</h2>")
    parts.extend(f"<p>{esc(line)}</p>" for line in s["diag_lines"])
    if s["diag_table"] is not None:
        parts.append(_df_table(s["diag_table"]))
    parts.append("<h2>Summary</h2>")
    if s["table_note"]:
        parts.append(f"<p class='note'>{esc(s['table_note'])}</p>")
    if len(s["table"]):
        parts.append(_df_table(s["table"]))
    parts.append("<h2>Figures</h2>")
    if not figures:
        parts.append("<p>no figures</p>")
    for caption, pngs, error in figures:
        if error is not None:
            parts.append(f"<p class='note'>figure '{esc(caption)}' could not be drawn: {esc(error)}</p>")
            continue
        for png in pngs:
            parts.append(f"<figure><img src=\"data:image/png;base64,{png}\" alt=\"{esc(caption)}\">"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _text_page(plt, lines: list[str]):
    fig = plt.figure(figsize=(8.27, 11.69))
    fig.text(0.05, 0.97, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=7)
    return fig


def _pdf_lines(s: dict) -> list[str]:
    lines = [s["title"], s["meta"], ""]
    lines += ["DATA"] + [f"  {k}: {v}" for k, v in s["data_rows"]] + [""]
    lines += ["FIT"] + [f"  {k}: {v}" for k, v in s["fit_rows"]] + [""]
    if s["notes"]:
        lines += ["WARNINGS"] + [f"  {n[:150]}" for n in s["notes"]] + [""]
    lines += ["DIAGNOSTICS"] + [f"  {line[:150]}" for line in s["diag_lines"]] + [""]
    lines += ["SUMMARY"] + (["  " + s["table_note"]] if s["table_note"] else [])
    if len(s["table"]):
        fmt = s["table"].map(format_value) if hasattr(s["table"], "map") else s["table"].applymap(format_value)
        lines += ["  " + line for line in fmt.to_string().splitlines()]
    return lines


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    from ._atomic import atomic_write

    atomic_write(path, write)


def write_report(
    idata,
    path: str | os.PathLike,
    *,
    title: str,
    config: Any = None,
    model: Any = None,
    data: Any = None,
    method: str | None = None,
    notes: list[str] | None = None,
    elapsed: float | None = None,
    format: str | None = None,
) -> Path:
    """Write a report of a fit: self-contained HTML, or a multi-page PDF.

    Parameters
    ----------
    idata : arviz.InferenceData
        The fit: a ``posterior`` group of draws, or a ``point_estimate`` group (a point fit,
        reported as estimates without uncertainty or diagnostics).
    path : str or path-like
        Destination; written atomically (temporary file, then ``os.replace``).
    title : str
        Heading of the report.
    config : Config, str or mapping, optional
        The configuration shown in the header (a :class:`~bayesneuro.config.Config` shows its
        source text).
    model : fitted estimator or FitResult, optional
        Adds the model's own figures (GLM filters, latent loadings, ...) and, for SVI, the ELBO.
    data : SpikeData, optional
        Adds the data summary (time bins, neurons, bin size, duration, ...).
    method : str, optional
        Inference method; default ``idata.posterior.attrs["method"]`` (or ``idata.attrs["method"]``).
    notes : list of str, optional
        Warnings raised during the fit, listed in the report.
    elapsed : float, optional
        Fit time in seconds.
    format : {"html", "pdf"}, optional
        Default from the extension of `path` (``.pdf`` -> PDF, otherwise HTML).

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import numpy as np, arviz as az, os, tempfile
    >>> from bayesneuro.report import write_report
    >>> idata = az.from_dict(posterior={"mu": np.random.default_rng(0).normal(size=(2, 50))})
    >>> path = write_report(idata, os.path.join(tempfile.mkdtemp(), "fit.html"), title="demo")
    >>> text = path.read_text()
    >>> "<h2>Summary</h2>" in text and 'src="data:image/png;base64,' in text
    True
    """
    from .diagnostics import is_point_fit

    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    if is_point_fit(idata):
        idata = _one_draw(idata)
    if not hasattr(idata, "posterior"):
        raise ValueError("write_report needs InferenceData with a posterior or a point_estimate group")
    fmt = format or ("pdf" if path.suffix.lower() == ".pdf" else "html")
    if fmt not in ("html", "pdf"):
        raise ValueError(f"format must be 'html' or 'pdf', got {fmt!r}")
    method = method or idata.posterior.attrs.get("method") or dict(getattr(idata, "attrs", {}) or {}).get("method")
    if method is None and model is not None:
        method = getattr(getattr(model, "result_", None), "method", None) or getattr(model, "method_", None)
    s = _sections(idata, title=title, config=config, model=model, data=data, method=method,
                  notes=notes, elapsed=elapsed)
    plt = _pyplot()
    specs = _figures(idata, model, data, method)
    if fmt == "html":
        rendered = []
        for caption, draw in specs:
            try:
                figs = _render(draw)
                try:
                    rendered.append((caption, [_png(f) for f in figs], None))
                finally:
                    for f in figs:
                        plt.close(f)
            except Exception as err:  # noqa: BLE001 - a failed figure is a note, not a crash
                rendered.append((caption, [], f"{type(err).__name__}: {err}"))
        text = _html(s, rendered)

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)

        _atomic_write(path, write)
        return path

    from matplotlib.backends.backend_pdf import PdfPages

    def write_pdf(tmp):
        with PdfPages(tmp) as pdf:
            page = _text_page(plt, _pdf_lines(s))
            pdf.savefig(page)
            plt.close(page)
            failed = []
            for caption, draw in specs:
                try:
                    figs = _render(draw)
                except Exception as err:  # noqa: BLE001
                    failed.append(f"figure '{caption}' could not be drawn: {type(err).__name__}: {err}")
                    continue
                for f in figs:
                    f.suptitle(caption, fontsize=9)
                    pdf.savefig(f, bbox_inches="tight")
                    plt.close(f)
            if failed:
                page = _text_page(plt, ["NOTES"] + failed)
                pdf.savefig(page)
                plt.close(page)

    _atomic_write(path, write_pdf)
    return path
