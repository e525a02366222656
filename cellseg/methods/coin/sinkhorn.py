"""Entropic optimal transport of pixels onto classes (docs/methods/coin.md#optimal-transport).

M pixels with mass a = 1/M, N classes with mass b = 1/N, kernel K = exp(-C / eps). The native solver follows
the reference update order (r <- a / (K c), then c <- b / (K^T r), starting from r = c = 1) in float64.
`faithful_stop` reproduces the reference's absolute test mean|r - r_prev| < 1e-2, which fires at iteration 2
for image-sized M (r ~ 1/M); otherwise iterate until the row-marginal error is below `tol`.
POT (`ot.sinkhorn`) scales columns first, so it only backs the converged mode.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

FAITHFUL_STOP_THRESHOLD = 1e-2  # reference `thresh`
BACKENDS = ("native", "pot")


def transport_plan(
    cost: np.ndarray,
    eps: float = 0.1,
    faithful_stop: bool = True,
    max_iter: int = 100,
    tol: float = 1e-9,
    backend: str = "native",
    log_domain: bool = False,
) -> np.ndarray:
    """float64 (M, N) plan T = diag(r) K diag(c) for the cost matrix `cost` (M pixels x N classes)."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise ValueError(f"cost has shape {cost.shape}; expected a non-empty (M pixels, N classes) matrix")
    if eps <= 0:
        raise ValueError(f"ot.eps must be > 0, got {eps}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown ot.backend {backend!r}; expected one of {BACKENDS}")
    if backend == "pot":
        if faithful_stop:
            raise ValueError("ot.backend=pot supports only the converged mode (refine.faithful_sinkhorn_stop=false):"
                             " POT scales columns first and has no reference stop test; use ot.backend=native")
        return _pot_plan(cost, eps, max_iter, tol)
    if log_domain:
        return _log_domain_plan(cost, eps, faithful_stop, max_iter, tol)
    return _native_plan(cost, eps, faithful_stop, max_iter, tol)


def uniform_marginals(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(m, 1.0 / m), np.full(n, 1.0 / n)


def _native_plan(cost: np.ndarray, eps: float, faithful_stop: bool, max_iter: int, tol: float) -> np.ndarray:
    a, b = uniform_marginals(*cost.shape)
    kernel = np.exp(-cost / eps)
    r, c = np.ones_like(a), np.ones_like(b)
    for _ in range(max_iter):
        r_prev = r
        r = a / (kernel @ c)
        c = b / (kernel.T @ r)
        if faithful_stop:
            if _reference_stop(r, r_prev):
                break
        elif _row_marginal_error(r * (kernel @ c), a) < tol:
            break
    return r[:, None] * kernel * c[None, :]


def _log_domain_plan(cost: np.ndarray, eps: float, faithful_stop: bool, max_iter: int, tol: float) -> np.ndarray:
    """Same iterations on log r, log c (no under/overflow for small eps or large costs)."""
    a, b = uniform_marginals(*cost.shape)
    log_kernel = -cost / eps
    log_r, log_c = np.zeros_like(a), np.zeros_like(b)
    for _ in range(max_iter):
        r_prev = np.exp(log_r)
        log_r = np.log(a) - logsumexp(log_kernel + log_c[None, :], axis=1)
        log_c = np.log(b) - logsumexp(log_kernel + log_r[:, None], axis=0)
        if faithful_stop:
            if _reference_stop(np.exp(log_r), r_prev):
                break
        elif _row_marginal_error(np.exp(log_r + logsumexp(log_kernel + log_c[None, :], axis=1)), a) < tol:
            break
    return np.exp(log_r[:, None] + log_kernel + log_c[None, :])


def _reference_stop(r: np.ndarray, r_prev: np.ndarray) -> bool:
    return float(np.abs(r - r_prev).mean()) < FAITHFUL_STOP_THRESHOLD


def _row_marginal_error(row_mass: np.ndarray, a: np.ndarray) -> float:
    """L1 distance of the plan's row sums to a (the columns are exact right after the c update)."""
    return float(np.abs(row_mass - a).sum())


def _pot_plan(cost: np.ndarray, eps: float, max_iter: int, tol: float) -> np.ndarray:
    import ot  # POT, a core dependency; imported here to keep module import light

    a, b = uniform_marginals(*cost.shape)
    return np.asarray(ot.sinkhorn(a, b, cost, reg=eps, numItermax=max_iter, stopThr=tol), dtype=np.float64)
