import pytest
import torch as th


@pytest.fixture(autouse=True)
def single_torch_thread():
    """These tiny networks train many times faster on one thread, and xdist already runs a worker per core."""
    num_threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(num_threads)
