import socket

import pytest
import torch.distributed as dist
from megatron.core import parallel_state


@pytest.fixture(scope="module")
def single_process_groups():
    """A one-process gloo group and megatron's parallel state, in this test process (no CPU
    runtime layer: only for code that never runs a CUDA call, e.g. meta-device builds, datasets).
    Torn down after the module."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    parallel_state.initialize_model_parallel(1, 1)
    yield
    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()
