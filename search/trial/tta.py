"""Test-time augmentation: the views a prediction averages over, defined once for selection and serving.

A face crop's framing is never exact: a photo's face is cropped by a detector whose box side varies by
about 4% from face to face against a dataset's own crops (measured on CK+ faces pasted into photos:
side sd 3.7%, 72% of it the face's own, so no detector setting removes it). A prediction averaged over
the mirror image and a zoom in and out by 8% hinges less on where a crop's edge fell. The views are
fixed linear maps of the pixels (a 1-D interpolation matrix applied to rows and to columns, edges
replicated), so the same arithmetic runs in :func:`predict_proba` and inside the exported ONNX graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import torch

#: Zooms TTA averages over, each also mirrored (1.0 = the crop itself). Chosen on a calibration draw of
#: CK+ faces in photos (disjoint from benchmarks/crop_agreement.py's): ±5% 93.7%, ±8% 94.7%, ±10% 92.7%
#: agreement with the faces' own 48×48 crops, against 90.3% for the mirror alone.
TTA_ZOOMS: tuple[float, ...] = (1.0, 0.92, 1.08)
#: Exports written before zooms were recorded averaged the image and its mirror only.
FLIP_ONLY: tuple[float, ...] = (1.0,)


@cache
def _zoom_matrix(side: int, zoom: float) -> torch.Tensor:
    """(side, side) bilinear resampling matrix of a zoom by ``zoom`` about the centre, edges replicated.
    Built in NumPy so that an ONNX trace records it as a constant, not as the ops that made it."""
    c = (side - 1) / 2
    src = np.clip(c + (np.arange(side) - c) / zoom, 0, side - 1)
    lo = np.minimum(np.floor(src), side - 2).astype(np.int64)
    frac = src - lo
    m = np.zeros((side, side))
    m[np.arange(side), lo] = 1 - frac
    m[np.arange(side), lo + 1] += frac
    return torch.from_numpy(m.astype(np.float32))


def tta_views(x: torch.Tensor, zooms: Sequence[float] = TTA_ZOOMS) -> torch.Tensor:
    """(N, C, H, W) → (2·len(zooms)·N, C, H, W): each zoom, then its mirror, view-major. Zoom and
    mirror are linear with rows summing to one, so they commute with the input normalisation."""
    side = int(x.shape[-1])
    views = []
    for z in zooms:
        v = x if z == 1.0 else _zoom_matrix(side, float(z)).to(x) @ x @ _zoom_matrix(side, float(z)).to(x).T
        views += [v, v.flip(3)]
    return torch.cat(views)


def mean_over_views(probs: torch.Tensor, n_views: int) -> torch.Tensor:
    """(V·N, K) probabilities of :func:`tta_views`' output → (N, K), their mean per image."""
    return probs.reshape(n_views, -1, probs.shape[-1]).mean(0)


def tta_proba(model: torch.nn.Module, x: torch.Tensor, zooms: Sequence[float] = TTA_ZOOMS) -> torch.Tensor:
    """Softmax of ``model`` averaged over the TTA views of a normalised batch ``x``."""
    return mean_over_views(torch.softmax(model(tta_views(x, zooms)), dim=1), 2 * len(zooms))


def tta_label(zooms: Sequence[float] = TTA_ZOOMS) -> str:
    """How summaries and the report name the TTA: ``TTA (mirror, zoom 0.92/1.08)``."""
    others = [f"{z:g}" for z in zooms if z != 1.0]
    return f"TTA (mirror, zoom {'/'.join(others)})" if others else "TTA (mirror)"
