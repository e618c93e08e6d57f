"""Who a process is, from torchrun's or srun's variables (pure, no process group)."""

from __future__ import annotations

import pytest

from megatron_recipes.runtime.distributed import first_slurm_host, launch_environment
from stack_common.errors import ConfigError


def test_torchrun_variables():
    env = {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "node7",
        "MASTER_PORT": "29400",
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "2",
    }  # srun + torchrun: torchrun's view wins
    launch = launch_environment(env)
    assert (
        launch.launcher,
        launch.rank,
        launch.world_size,
        launch.local_rank,
        launch.master_addr,
        launch.master_port,
    ) == ("torchrun", 3, 8, 1, "node7", 29400)


def test_srun_variables_one_task_per_gpu():
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "16",
        "SLURM_LOCALID": "5",
        "SLURM_JOB_ID": "12345",
        "SLURM_STEP_NODELIST": "gpu[003-004]",
        "SLURM_JOB_NODELIST": "gpu[001-009]",
    }
    launch = launch_environment(env)
    assert (launch.launcher, launch.rank, launch.world_size, launch.local_rank) == ("slurm", 5, 16, 5)
    assert launch.master_addr == "gpu003"
    assert launch.master_port == 20000 + 12345 % 20000
    assert launch_environment({**env, "MASTER_ADDR": "head", "MASTER_PORT": "6000"}).master_port == 6000


def test_single_process():
    launch = launch_environment({})
    assert (launch.launcher, launch.rank, launch.world_size) == ("single", 0, 1)
    assert 0 < launch.master_port < 65536


@pytest.mark.parametrize(
    "nodelist,first",
    [
        ("node1", "node1"),
        ("gpu[003-005,9],cpu1", "gpu003"),
        ("a-b[10-12]", "a-b10"),
        ("x[7]", "x7"),
        ("n1,n2", "n1"),
    ],
)
def test_first_slurm_host(nodelist, first):
    assert first_slurm_host(nodelist) == first


def test_bad_nodelist():
    with pytest.raises(ConfigError):
        first_slurm_host("")
