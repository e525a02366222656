"""Stage 1b of COIN (A3.3-A3.8, docs/methods/coin.md#optimal-transport): heatmaps -> binary foreground S via optimal transport and optional CRF.

Input heatmaps are the raw zoom-averaged cosine maps of A3.2, channel 0 = background, 1 = foreground; the
A3.3 normalisation is applied here because the no-OT ablation uses the raw foreground map. `propagate_mask` is
pass 2 of the propagation stage with the options of `method.refine`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from cellseg.data.intensity import as_uint8_rgb
from cellseg.methods.coin.prototypes import MINMAX_EPS, normalise_heatmaps
from cellseg.methods.coin.sinkhorn import transport_plan

CRF_MISSING = ("DenseCRF requested (refine.crf.enabled=true) but the optional extra 'crf' is not installed: "
               "pip install 'cellseg[crf]'")
UNARY_CLIP = 1e-5  # pydensecrf unary_from_softmax default clip

log = logging.getLogger(__name__)


def ot_reweight(
    heatmaps: np.ndarray,
    eps: float = 0.1,
    faithful_stop: bool = True,
    max_iter: int = 100,
    tol: float = 1e-9,
    backend: str = "native",
    log_domain: bool = False,
) -> np.ndarray:
    """A3.3-A3.5: normalise, transport pixels onto the two classes, h <- h * T_minmax, normalise again."""
    h = normalise_heatmaps(np.asarray(heatmaps, dtype=np.float64))
    n_classes = h.shape[0]
    cost = 1.0 - h.reshape(n_classes, -1).T
    plan = transport_plan(cost, eps=eps, faithful_stop=faithful_stop, max_iter=max_iter, tol=tol,
                          backend=backend, log_domain=log_domain)
    plan = _minmax_columns(plan)
    return normalise_heatmaps(h * plan.T.reshape(h.shape))


def refine_with_ot(
    heatmaps: np.ndarray,
    eps: float = 0.1,
    faithful_stop: bool = True,
    max_iter: int = 100,
    tol: float = 1e-9,
    backend: str = "native",
    log_domain: bool = False,
    gamma: float = 1.0,
    ot_enabled: bool = True,
    no_ot_threshold: float = 0.4,
    crf: dict | None = None,
    image_rgb: np.ndarray | None = None,
) -> np.ndarray:
    """Binary foreground S (bool H x W) from raw (2, H, W) cosine heatmaps.

    OT path (A3.3-A3.6, A3.8): `ot_reweight`; gamma > 1 sharpens h_fg <- h_fg^gamma; gamma == 0 skips the CRF.
    No-OT ablation: h_bg <- `no_ot_threshold` (-1: the mean of h_fg) on the raw maps. `crf` (keyword
    arguments of `crf_refine`, or None = off) runs DenseCRF on `image_rgb` before the argmax (ties -> bg).
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    if heatmaps.ndim != 3 or heatmaps.shape[0] != 2:
        raise ValueError(f"heatmaps have shape {heatmaps.shape}; expected (2, H, W) = (background, foreground)")
    if ot_enabled:
        h = ot_reweight(heatmaps, eps, faithful_stop, max_iter, tol, backend, log_domain)
        if gamma > 1:
            h[1] = h[1] ** gamma
    else:
        h = heatmaps.copy()
        h[0] = h[1].mean() if no_ot_threshold == -1 else no_ot_threshold
    if crf is not None and gamma > 0:
        if image_rgb is None:
            raise ValueError("refine.crf.enabled=true needs the RGB image (image_rgb) for the bilateral term")
        h = crf_refine(image_rgb, h, **crf)
    return np.argmax(h, axis=0) == 1


def refine_kwargs(refine: Mapping) -> dict:
    """`method.refine` -> keyword arguments of `refine_with_ot` (without the image)."""
    ot, crf = refine["ot"], refine["crf"]
    crf_args = {k: v for k, v in crf.items() if k != "enabled"} if crf["enabled"] else None
    return dict(eps=float(ot["eps"]), faithful_stop=bool(refine["faithful_sinkhorn_stop"]),
                max_iter=int(ot["max_iter"]), tol=float(ot["tol"]), backend=ot["backend"],
                log_domain=bool(ot["log_domain"]), gamma=float(refine["gamma"]), ot_enabled=bool(ot["enabled"]),
                no_ot_threshold=float(refine["no_ot_threshold"]), crf=crf_args)


def propagate_mask(image_rgb: np.ndarray, heatmaps: np.ndarray | None, ucis: np.ndarray, refine: Mapping) -> np.ndarray:
    """S (bool H x W) from the heatmaps (A3.3-A3.8); without a prototype for the image S = U > 0."""
    if heatmaps is None:
        log.warning("an image's UCIS map has no background (or foreground) pixel: S = U > 0 for it")
        return ucis > 0
    return refine_with_ot(heatmaps, image_rgb=image_rgb, **refine_kwargs(refine))


def crf_refine(
    image_rgb: np.ndarray,
    probs: np.ndarray,
    gauss_sxy: float = 1,
    gauss_compat: float = 3,
    bilateral_sxy: float = 67,
    bilateral_srgb: float = 3,
    bilateral_compat: float = 4,
    iters: int = 10,
) -> np.ndarray:
    """A3.7 DenseCRF (pydensecrf): unary -log(clip(probs, 1e-5)) (not renormalised), Gaussian + bilateral terms.

    Returns the (C, H, W) marginals. Needs the optional extra `crf` (pydensecrf2, import name pydensecrf).
    """
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as err:
        raise ImportError(CRF_MISSING) from err
    n_classes, height, width = probs.shape
    image = np.ascontiguousarray(as_uint8_rgb(image_rgb)[..., :3])  # float [0, 1] images rounded, not cast
    if image.shape[:2] != (height, width):
        raise ValueError(f"image has shape {image.shape}; expected ({height}, {width}, 3) like the heatmaps")
    model = dcrf.DenseCRF2D(width, height, n_classes)
    model.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32), clip=UNARY_CLIP)))
    model.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    model.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=image, compat=bilateral_compat)
    return np.asarray(model.inference(iters)).reshape(n_classes, height, width)


def _minmax_columns(plan: np.ndarray) -> np.ndarray:
    """Min-max each class column of the (M, N) plan over pixels (denominator clipped at 1e-5)."""
    lo = plan.min(axis=0, keepdims=True)
    hi = plan.max(axis=0, keepdims=True)
    return (plan - lo) / np.maximum(hi - lo, MINMAX_EPS)
