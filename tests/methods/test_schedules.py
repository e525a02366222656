"""Iteration-based learning-rate schedules."""

import pytest
import torch

from cellseg.methods.schedules import cosine_warm_restarts


def learning_rates(scheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def sgd(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_without_cycles_the_reference_restarts_are_kept():
    fitted = learning_rates(cosine_warm_restarts(sgd(), total_steps=600), 600)
    reference = learning_rates(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(sgd(), 2, 2, 1e-6), 600)
    assert fitted == pytest.approx(reference)
    assert fitted[-1] > 0.9  # step 600 lies early in the cycle 510..1022: near the peak rate


def test_fitted_cycles_end_annealed_at_the_last_step():
    rates = learning_rates(cosine_warm_restarts(sgd(), total_steps=600, cycles=4, eta_min=0.0), 600)
    restarts = [step for step in range(1, 600) if rates[step] > rates[step - 1]]
    assert restarts == [40, 120, 280]  # cycles of 40, 80, 160 and 320 steps
    assert rates[-1] < 1e-3


def test_zero_cycles_are_refused():
    with pytest.raises(ValueError, match="scheduler.cycles"):
        cosine_warm_restarts(sgd(), total_steps=10, cycles=0)
