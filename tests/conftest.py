import os

import pytest

from stack_common.reproducible import REPRODUCIBLE_CPU_VARIABLES

# Tests run on the CPU, one thread per process (no oversubscribed CI cores), with the kernels and
# GEMM paths pinned before torch is imported: a training run in a test is then the same model bit
# for bit on any x86-64 machine, and its subprocesses inherit the pins (stack_common/reproducible.py).
os.environ.update(REPRODUCIBLE_CPU_VARIABLES)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402  after the thread settings above


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# Subprocesses (Beam worker processes, torchrun ranks, `python -m` entry points) must import this
# checkout, whatever is installed in the environment.
from tests.support import REPO_ROOT  # noqa: E402

os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
