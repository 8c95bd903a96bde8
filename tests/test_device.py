"""device: device selection, precision checks and the default network batch."""

import pytest
import torch

from hyperspy_partialscan.device import (
    CPU_NETWORK_BATCH,
    GPU_NETWORK_BATCH,
    autocast,
    check_precision,
    default_network_batch,
    select_device,
)


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda:0")


@pytest.mark.parametrize("precision", [None, "float32", "bfloat16", "float16"])
def test_valid_precisions(precision):
    assert check_precision(precision) == precision


@pytest.mark.parametrize("precision", ["half", "fp16", 16, ""])
def test_invalid_precisions(precision):
    with pytest.raises(ValueError, match="precision must be None, 'float32', 'bfloat16' or 'float16'"):
        check_precision(precision)


def test_default_network_batch():
    assert default_network_batch(torch.device("cpu"), "completion") == CPU_NETWORK_BATCH["completion"] == 2
    assert default_network_batch(torch.device("cpu"), "denoising") == CPU_NETWORK_BATCH["denoising"] == 4
    assert default_network_batch(torch.device("cuda"), "completion") == GPU_NETWORK_BATCH


def test_autocast_runs_bfloat16_on_the_cpu():
    with autocast(torch.device("cpu"), "bfloat16"):
        y = torch.nn.Linear(4, 4)(torch.ones(1, 4))
    assert y.dtype == torch.bfloat16
    with autocast(torch.device("cpu"), None):
        assert torch.nn.Linear(4, 4)(torch.ones(1, 4)).dtype == torch.float32
