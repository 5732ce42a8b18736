"""The SLURM executor plugin's parameters, without a cluster (tests/test_slurm.py runs them on one)."""

from __future__ import annotations

import pytest

from snakemake_executor_plugin_submitit import ExecutorSettings, slurm_parameters, warning_delay_s


@pytest.mark.parametrize("minutes, delay", [(3, 30), (4, 60), (5, 90), (6, 120), (10, 120), (600, 120)])
def test_the_warning_delay_is_the_profiles_unless_an_early_warning_would_come_before_half_the_limit(minutes, delay):
    assert warning_delay_s(minutes, 120) == delay
    assert minutes * 60 - (delay + 60) >= minutes * 30  # SLURM may warn up to 60 s early


def test_a_job_of_two_minutes_or_less_gets_no_warning_ahead_of_its_limit():
    assert warning_delay_s(1, 120) == 0 and warning_delay_s(2, 120) == 0


def test_a_jobs_parameters_carry_its_own_warning_delay():
    settings = ExecutorSettings(signal_delay_s=120)
    assert slurm_parameters({"runtime": 3}, 1, settings, "smk-run")["signal_delay_s"] == 30
    assert slurm_parameters({"runtime": 30}, 1, settings, "smk-run")["signal_delay_s"] == 120
