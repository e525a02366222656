"""Lightning accelerator names as torch devices, with one clear error for what is unavailable or unknown."""

import pytest
import torch

from cellseg.utils.devices import torch_device


def test_cpu_and_auto_resolve_on_any_machine():
    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda", "GPU"])
def test_gpu_means_cuda(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device(name) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=f"accelerator={name}, but no CUDA device"):
        torch_device(name)


def test_unknown_accelerator_is_named_with_the_choices():
    with pytest.raises(ValueError, match="trainer.accelerator=tpu; expected one of cpu, gpu"):
        torch_device("tpu", key="trainer.accelerator")
