import pytest

from scaling.train.distributed import World


def test_the_process_layout_comes_from_torchrun_or_slurm_or_is_a_single_process():
    assert World.from_env({}) == World(0, 1, 0)
    assert World.from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}) == World(3, 8, 3)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}
    assert World.from_env(slurm) == World(5, 16, 1)
    assert World.from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"}) == World(0, 1, 0)
    assert World(0, 4).main and not World(1, 4).main


def test_a_multi_task_slurm_job_without_a_rendezvous_address_is_refused():
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        World.from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"})
