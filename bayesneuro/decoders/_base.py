"""What every decoder shares: ``score`` on held-out data and fitted-state checks."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import scores as _scores
from ._inputs import as_spike_data, label_array, target_array
from .._pynapple import pynapple_io


class Decoder:
    """Base class: subclasses implement ``fit`` and ``decode``.

    ``decode`` returns a posterior whose ``index`` attribute lists the bins of the data it
    decoded (all of them, except for decoders with lags that drop incomplete windows).
    """

    _discrete = False

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit(data, target) first")

    @pynapple_io(target=True)
    def score(self, data: Any, target: Any, levels: Sequence[float] = _scores.LEVELS) -> dict[str, Any]:
        """Decode `data` and score the posterior against `target` on the decoded bins.

        Parameters
        ----------
        data : SpikeData
            Held-out data with the training neurons.
        target : str, sequence of str or array_like
            The true variable, as in ``fit``.
        levels : sequence of float, default (0.5, 0.9, 0.95)
            Credible levels whose coverage is reported.

        Returns
        -------
        dict
            See :func:`bayesneuro.decoders.scores.evaluate`.
        """
        self._check_fitted()
        data = as_spike_data(data, getattr(self, "bin_size_", None))
        post = self.decode(data)
        if self._discrete:
            truth = label_array(data, target)
        else:
            truth, _ = target_array(data, target)
        idx = getattr(post, "index", None)
        if idx is not None:
            truth = truth[idx]
        return _scores.evaluate(post, truth, levels)


def attach_index(post: Any, index: np.ndarray) -> Any:
    """Record which bins of the data a posterior decodes."""
    post.index = np.asarray(index, dtype=np.int64)
    return post
