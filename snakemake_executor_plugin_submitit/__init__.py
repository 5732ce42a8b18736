"""A Snakemake executor plugin that runs jobs on SLURM through submitit.

``snakemake --executor submitit`` (``profiles/slurm`` sets it). Snakemake finds
the plugin by its module name, so it ships in this project's own wheel.

Resources use the names of Snakemake's own SLURM plugin, so a profile stays
portable between the two:

    slurm_partition → --partition     slurm_account → --account
    runtime (min)   → --time          mem_mb        → --mem
    cpus_per_task   → --cpus-per-task (default: the rule's threads)
    gpu (+ gpu_model) → --gpus=[model:]N            gres → --gres
    constraint      → --constraint    nodes → --nodes     tasks → --ntasks

Preemption and time limits: each job is a :class:`JobCommand`, which submitit
makes checkpointable. SLURM's warning signal (SIGUSR2, sent ``signal_delay_s``
before the time limit, less for short jobs: :func:`warning_delay_s`; or on
preemption where SLURM is set to send it) stops the job's processes with
SIGTERM — the trainer checkpoints at the step in progress and exits
(:mod:`scaling.train.preemption`) — and requeues the same command, which
resumes from the checkpoint. After ``max_requeues`` the job fails, and the error
names its log and shows the log's tail. When SLURM itself ends the job with
SIGTERM (preemption without the warning signal, ``scontrol requeue``,
``scancel``), the trainer checkpoints the same way and the job leaves no result:
a requeued job runs its command again, which resumes, and a cancelled one fails
with its final state.

Settings are profile keys ``submitit-<name>`` (flags ``--submitit-<name>``):
see :class:`ExecutorSettings`.
"""


import asyncio
import os
import shlex
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncGenerator, List, Optional

import submitit
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

# sacct states of a job that will not run again (anything else may still finish)
FINAL_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "REVOKED", "TIMEOUT",
}
LOG_TAIL_LINES = 25


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    folder: str = field(
        default=".snakemake/submitit",
        metadata={"help": "directory for submitit's job files and SLURM logs (on the shared filesystem)"},
    )
    signal_delay_s: int = field(
        default=120,
        metadata={"help": "seconds before the time limit at which SLURM sends SIGUSR2 so the job can checkpoint "
                          "(at most half the limit less 60 s)"},
    )
    max_requeues: int = field(
        default=3,
        metadata={"help": "preemptions or time-outs a job may be requeued for before it fails"},
    )
    array_size: int = field(
        default=1000,
        metadata={"help": "ready jobs with equal resources go to SLURM as job arrays of at most this many "
                          "tasks (1: one job each)"},
    )
    array_parallelism: int = field(
        default=0,
        metadata={"help": "at most this many tasks of a job array run at once (0: no limit)"},
    )


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=False,  # sbatch exports the submitting environment
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=1,
)


class JobCommand(submitit.helpers.Checkpointable):
    """A Snakemake job's shell command, run under bash in its own session.

    On SLURM's warning signal submitit calls :meth:`checkpoint`: the command's
    processes get SIGTERM (and SIGKILL after ``grace_s``), and the same command
    is requeued. A command that fails after SLURM sent this process SIGTERM (its
    own processes got it too) was ended by SLURM, which decides what comes next:
    the job exits without a result, so that Snakemake waits for a requeued job
    and sees a cancelled one fail.
    """

    grace_s = 60  # from SIGTERM to SIGKILL: the trainer checkpoints the step in progress in this time

    def __init__(self, command: str, cwd: str):
        self.command, self.cwd = command, cwd
        self._proc: Optional[subprocess.Popen] = None

    def __call__(self) -> None:
        terminated = []  # SLURM ends a job by SIGTERM to all its processes; submitit's own handler ignores it
        signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
        # SLURM may send its warning signal to every process of the job: the command ignores it
        # (ignored signals stay ignored across exec) and submitit's handler in this process acts.
        self._proc = subprocess.Popen(
            ["bash", "-c", f"trap '' USR2; {self.command}"], cwd=self.cwd, start_new_session=True
        )
        code = self._proc.wait()
        if code != 0 and terminated:
            raise SystemExit(code)  # not an Exception: submitit writes no result
        if code != 0:
            raise RuntimeError(f"the job's command exited with status {code}")

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        if self._proc is not None and not self._exited():
            os.killpg(self._proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace_s
            while not self._exited() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self._exited():
                os.killpg(self._proc.pid, signal.SIGKILL)
        return submitit.helpers.DelayedSubmission(JobCommand(self.command, self.cwd))

    def _exited(self) -> bool:
        """Whether the command has ended, without reaping it. Not ``Popen.poll``/``wait``: submitit's signal handler
        calls :meth:`checkpoint` in the thread that is blocked in ``Popen.wait`` in :meth:`__call__`, which holds
        Popen's waitpid lock, so they would see the command run on until the grace period ended, then SIGKILL it."""
        try:
            return os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # reaped already
            return True

    def __getstate__(self):
        return {"command": self.command, "cwd": self.cwd, "_proc": None}


def warning_delay_s(limit_minutes: int, delay_s: int) -> int:
    """Seconds before a job's time limit at which SLURM is asked for its warning signal (``--signal=USR2@s``).

    SLURM checks time limits about once a minute, so it "may send the signal up to 60 seconds earlier than
    specified" (sbatch(1), ``--signal``). A short job asked for the full ``delay_s`` could be warned, and
    requeued, as soon as it starts, again after each requeue. The delay is therefore cut so that even an early
    warning comes no sooner than half the limit: ``min(delay_s, limit/2 - 60 s)``, 0 for limits of 2 minutes or less
    (the study's ``cluster.min_runtime_minutes`` is at least 3, where the warning can come 30 s before the end).
    """
    return max(0, min(delay_s, limit_minutes * 30 - 60))


def slurm_parameters(resources, threads: int, settings: ExecutorSettings, name: str) -> dict:
    """submitit SlurmExecutor parameters for a job's Snakemake resources (see module docstring)."""
    extra = {}
    params = {
        "job_name": name,
        "time": int(resources.get("runtime", 60)),
        "cpus_per_task": int(resources.get("cpus_per_task", threads)),
        "signal_delay_s": warning_delay_s(int(resources.get("runtime", 60)), settings.signal_delay_s),
        "stderr_to_stdout": True,
    }
    if resources.get("mem_mb"):
        params["mem"] = f"{int(resources['mem_mb'])}M"
    for name_, key in (("slurm_partition", "partition"), ("constraint", "constraint"), ("gres", "gres")):
        if resources.get(name_):
            params[key] = str(resources[name_])
    if resources.get("slurm_account"):
        params["account"] = str(resources["slurm_account"])
    if resources.get("nodes"):
        params["nodes"] = int(resources["nodes"])
    if resources.get("tasks"):
        extra["ntasks"] = int(resources["tasks"])
    if int(resources.get("gpu", 0) or 0) > 0:
        model = resources.get("gpu_model")
        extra["gpus"] = f"{model}:{int(resources['gpu'])}" if model else int(resources["gpu"])
    if settings.array_parallelism:
        params["array_parallelism"] = settings.array_parallelism
    params["additional_parameters"] = extra
    return params


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


class Executor(RemoteExecutor):
    def __post_init__(self):
        self.settings: ExecutorSettings = self.workflow.executor_settings
        self.watcher = submitit.SlurmJob.watcher  # one sacct call per poll cycle for all jobs
        self.folder = Path(self.settings.folder).absolute() / "%j"

    def _executor(self, job: JobExecutorInterface) -> submitit.SlurmExecutor:
        ex = submitit.SlurmExecutor(folder=self.folder, max_num_timeout=self.settings.max_requeues)
        name = job.groupid if job.is_group() else job.name  # e.g. smk-run: a run's train and evaluate jobs
        params = slurm_parameters(job.resources, job.threads, self.settings, f"smk-{name}")
        ex.update_parameters(**params)
        return ex

    def run_jobs(self, jobs: List[JobExecutorInterface]):
        """Submit ready jobs, as job arrays of up to ``array_size`` jobs with equal resources."""
        groups = defaultdict(list)
        for job in jobs:
            groups[repr(sorted(slurm_parameters(job.resources, job.threads, self.settings, "").items()))].append(job)
        size = max(1, self.settings.array_size)
        for group in groups.values():
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                for job in chunk:
                    self.run_job_pre(job)
                self._submit(chunk)

    def run_job(self, job: JobExecutorInterface):
        self._submit([job])

    def report_job_error(self, job_info: SubmittedJobInfo, msg=None, **kwargs):
        if msg and job_info.job.is_group():  # Snakemake reports a group job's error without the message
            self.logger.error(f"Error in group {job_info.job.groupid}: {msg}")
        super().report_job_error(job_info, msg=msg, **kwargs)

    def _submit(self, jobs: List[JobExecutorInterface]):
        ex = self._executor(jobs[0])
        commands = [JobCommand(self.format_job_exec(job), os.getcwd()) for job in jobs]
        try:
            if len(jobs) == 1:
                sjobs = [ex.submit(commands[0])]
            else:
                with ex.batch():
                    pending = [ex.submit(c) for c in commands]
                sjobs = pending
        except Exception as e:  # sbatch refused: SLURM's own message, e.g. an invalid partition
            for job in jobs:
                self.report_job_error(SubmittedJobInfo(job), msg=f"SLURM refused the job: {str(e).strip()[-2000:]}\n")
            return
        for job, sjob in zip(jobs, sjobs):
            self.report_job_submission(SubmittedJobInfo(job, external_jobid=sjob.job_id, aux={"sjob": sjob}))

    async def check_active_jobs(
        self, active_jobs: List[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if active_jobs:
            async with self.status_rate_limiter:
                await asyncio.to_thread(self.watcher.update)
        for info in active_jobs:
            sjob: submitit.SlurmJob = info.aux["sjob"]
            state = self.watcher.get_state(sjob.job_id, mode="cache").split()[0].upper()
            if not sjob.paths.result_pickle.exists() and state not in FINAL_STATES:
                yield info
                continue
            try:  # the result file decides; a job that ended without one raises here
                error = await asyncio.to_thread(sjob.exception)
            except Exception as e:
                error = e
            if error is None:
                self.report_job_success(info)
            else:
                log = Path(str(sjob.paths.stdout))
                self.report_job_error(
                    info,
                    msg=f"SLURM job {sjob.job_id} ended as {state}: {str(error or '').strip()[-1000:]}\n"
                        f"job log: {log}\n--- last {LOG_TAIL_LINES} lines ---\n{log_tail(log)}\n",
                )

    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]):
        """Cancel every active job with one scancel call."""
        ids = [info.external_jobid for info in active_jobs if info.external_jobid]
        if ids:
            proc = subprocess.run(["scancel", *ids], capture_output=True, text=True)
            if proc.returncode != 0:
                raise WorkflowError(f"scancel {shlex.join(ids)} failed: {proc.stderr.strip()}")
