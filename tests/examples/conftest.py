import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The examples' models are tiny; on a shared CI host extra intra-op threads only spin against other tenants."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
