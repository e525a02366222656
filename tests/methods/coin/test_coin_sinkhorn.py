"""Sinkhorn transport plan (A3.4): reference update order and stop test, converged mode vs POT."""

from __future__ import annotations

import numpy as np
import ot
import pytest

from cellseg.methods.coin.sinkhorn import transport_plan

# 4 pixels x 2 classes, nearly balanced so that the reference stop test fires at iteration 2
BALANCED_COST = np.array([[0.1, 0.9], [0.9, 0.1], [0.2, 0.7], [0.7, 0.25]])
UNBALANCED_COST = np.array([[0.1, 0.9], [0.2, 0.7], [0.8, 0.3], [0.6, 0.5]])


def _hand_iterations(cost, n_iter, eps=0.1):
    """The reference iterations written out: r <- a / (K c), then c <- b / (K^T r), from r = c = 1."""
    a = np.full(4, 0.25)
    b = np.full(2, 0.5)
    kernel = np.exp(-cost / eps)
    r_prev = np.ones(4)
    r1 = a / (kernel @ np.ones(2))
    c1 = b / (kernel.T @ r1)
    r2 = a / (kernel @ c1)
    c2 = b / (kernel.T @ r2)
    errors = [np.abs(r1 - r_prev).mean(), np.abs(r2 - r1).mean()]
    r, c = (r1, c1) if n_iter == 1 else (r2, c2)
    return r[:, None] * kernel * c[None, :], errors


def test_faithful_stop_reproduces_the_two_iteration_plan():
    expected, errors = _hand_iterations(BALANCED_COST, 2)
    assert errors[0] >= 1e-2 > errors[1]  # the reference test does not fire at 1, fires at 2
    for log_domain in (False, True):
        plan = transport_plan(BALANCED_COST, eps=0.1, faithful_stop=True, log_domain=log_domain)
        np.testing.assert_allclose(plan, expected, rtol=0, atol=1e-12)
    # a third iteration would change the plan: the stop really happened at 2
    three = transport_plan(BALANCED_COST, faithful_stop=False, max_iter=3, tol=0.0)
    assert np.abs(three - expected).max() > 1e-7


def test_max_iter_caps_the_iterations():
    expected, errors = _hand_iterations(UNBALANCED_COST, 2)
    assert errors[1] >= 1e-2  # the stop test would not fire: max_iter decides
    np.testing.assert_allclose(transport_plan(UNBALANCED_COST, max_iter=2), expected, rtol=0, atol=1e-12)
    one, _ = _hand_iterations(UNBALANCED_COST, 1)
    np.testing.assert_allclose(transport_plan(UNBALANCED_COST, max_iter=1), one, rtol=0, atol=1e-12)


def test_faithful_stop_fires_at_iteration_two_for_image_sized_inputs():
    rng = np.random.default_rng(0)
    fg = rng.random(4096)
    cost = 1.0 - np.stack([1.0 - fg, fg], axis=1)
    plan = transport_plan(cost)
    np.testing.assert_array_equal(plan, transport_plan(cost, faithful_stop=False, max_iter=2, tol=0.0))
    assert np.abs(plan - transport_plan(cost, faithful_stop=False, max_iter=3, tol=0.0)).max() > 0


@pytest.mark.parametrize("log_domain", [False, True])
def test_converged_plan_matches_pot_and_meets_both_marginals(log_domain):
    rng = np.random.default_rng(3)
    cost = rng.random((60, 2))
    plan = transport_plan(cost, eps=0.1, faithful_stop=False, max_iter=10000, tol=1e-13, log_domain=log_domain)
    a, b = np.full(60, 1 / 60), np.full(2, 0.5)
    reference = ot.sinkhorn(a, b, cost, reg=0.1, numItermax=10000, stopThr=1e-13)
    np.testing.assert_allclose(plan, reference, rtol=0, atol=1e-6)
    np.testing.assert_allclose(plan.sum(axis=1), a, atol=1e-12)
    np.testing.assert_allclose(plan.sum(axis=0), b, atol=1e-12)
    pot_plan = transport_plan(cost, faithful_stop=False, max_iter=10000, tol=1e-13, backend="pot")
    np.testing.assert_allclose(pot_plan, plan, rtol=0, atol=1e-6)


def test_transport_plan_errors():
    with pytest.raises(ValueError, match="converged mode"):
        transport_plan(BALANCED_COST, backend="pot", faithful_stop=True)
    with pytest.raises(ValueError, match="ot.backend"):
        transport_plan(BALANCED_COST, backend="torch")
    with pytest.raises(ValueError, match="non-empty"):
        transport_plan(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="eps"):
        transport_plan(BALANCED_COST, eps=0.0)
