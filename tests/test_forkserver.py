"""A local study's job server (scaling.forkserver): a command sent to it runs as it would in its own process
(directory, environment, streams, exit status, signals), and anything short of a server runs it in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling import forkserver

# The server's job, importable by the server from the test's folder: what each command does with argv.
JOB = '''
import os, signal, sys, time

def run(argv):
    what, *rest = argv
    if what == "report":  # where and how it runs
        print(os.getcwd(), os.environ.get("ANSWER"), os.getpid(), sys.argv[0],
              signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN, flush=True)
    elif what == "exit":
        raise SystemExit(int(rest[0]) if rest[0].lstrip("-").isdigit() else rest[0])
    elif what == "die":  # as the OOM killer would kill it
        os.kill(os.getpid(), signal.SIGKILL)
    elif what == "raise":
        raise RuntimeError("a bug in the job")
    elif what == "trap":  # stops on SIGTERM with its own code, leaving a mark
        signal.signal(signal.SIGTERM, lambda s, f: (open(rest[0], "w").write("stopped"), os._exit(7)))
        print("ready", flush=True)
        time.sleep(60)
    elif what == "process":  # what the OS holds for it
        import resource
        print(os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)),
              resource.getrlimit(resource.RLIMIT_NOFILE)[0], open("/proc/self/comm").read().strip(), flush=True)
    elif what == "blas":  # its BLAS threads
        import threadpoolctl
        print(*[pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"])
    elif what == "pid":  # prints its pid, then waits
        print(os.getpid(), flush=True)
        time.sleep(60)
    elif what == "modules":  # what the server imported before forking it
        print("preloaded" in sys.modules, flush=True)
    elif what == "sleep":
        print("ready", flush=True)
        time.sleep(60)
'''

# A client: the `scaling` command's first step. Exit 99: not run by a server (the command would run in place).
CLIENT = """
import signal, sys
from scaling import forkserver
if sys.argv[1] == "--ignore-usr2":
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    sys.argv.pop(1)
code = forkserver.delegate(sys.argv[1:])
sys.exit(99 if code is None else code)
"""

# An owner: starts a server (its name on stdout) and lives until killed, as Snakemake does during a study.
OWNER = """
import sys, time
from scaling import forkserver
print(forkserver.start("job:run", ["job", "preloaded"], sys.argv[1], wait=True), flush=True)
time.sleep(600)
"""


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A server whose owner lives for the test: yields its log; the clients' environment names the server."""
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "preloaded.py").write_text("import numpy  # its BLAS builds its thread pool when loaded\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    log = tmp_path / "logs" / "forkserver.log"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(log)], stdout=subprocess.PIPE, text=True)
    monkeypatch.setenv(forkserver.ENV, owner.stdout.readline().strip())
    yield log
    owner.kill()
    owner.wait()


def client(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLIENT, *argv], capture_output=True, text=True, timeout=60,
                          **kwargs)


def started(*argv: str) -> subprocess.Popen:
    """A client whose job has printed its first line."""
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, *argv], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def test_a_command_runs_in_the_server_with_the_clients_directory_environment_and_streams(server, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with open(tmp_path / "out.txt", "w") as out:  # the client's stdout is a file: the job writes into it
        proc = subprocess.run([sys.executable, "-c", CLIENT, "report"], cwd=work, stdout=out, timeout=60,
                              env={**os.environ, "ANSWER": "42"})
    assert proc.returncode == 0
    cwd, answer, pid, argv0, usr2_ignored = (tmp_path / "out.txt").read_text().split()
    assert (cwd, answer, argv0, usr2_ignored) == (str(work), "42", "scaling", "False")
    assert f"pid {pid}: scaling report: exit 0" in server.read_text()  # the process the server forked


def test_a_job_finds_the_modules_the_server_imported(server):
    assert "imported 2 modules in " in server.read_text()  # before start(wait=True) returned
    assert client("modules").stdout == "True\n"


def test_the_job_takes_on_its_clients_nice_value_cpus_and_limits(server):
    """As a rule's shell line would set them (nice, taskset, ulimit), for the job the server forks."""
    cpu = min(os.sched_getaffinity(0))
    proc = subprocess.run(["nice", "-n", "5", "taskset", "-c", str(cpu), "bash", "-c",
                           f"ulimit -n 256 && exec {sys.executable} -c '{CLIENT}' process"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split(maxsplit=3) == [str(os.getpriority(os.PRIO_PROCESS, 0) + 5), f"[{cpu}]", "256",
                                             "scaling process\n"]


def test_the_jobs_thread_pools_are_sized_as_snakemake_asks(server):
    """Snakemake sets OMP_NUM_THREADS to a job's threads; the server's BLAS sized its pool when it was loaded."""
    assert client("blas", env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split() == ["1"]


def test_ctrl_z_stops_the_job_and_fg_resumes_it(server):
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, "pid"], stdout=subprocess.PIPE, text=True)
    job = int(proc.stdout.readline())
    for signum, state in ((signal.SIGTSTP, "T"), (signal.SIGCONT, "S")):
        proc.send_signal(signum)
        deadline = time.monotonic() + 30
        while _state(job) != state and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(job) == state
    proc.terminate()
    assert proc.wait(timeout=30) == -signal.SIGTERM


def _state(pid: int) -> str:
    """A process's state letter (/proc/PID/stat): S sleeping, T stopped."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_the_job_keeps_the_signals_its_client_ignores(server):
    proc = client("--ignore-usr2", "report")
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "True"


@pytest.mark.parametrize("argv, code, stderr", [
    (("exit", "3"), 3, ""),
    (("exit", "-1"), 255, ""),  # as the OS keeps a negative code, not a signal
    (("exit", "error: a bad study"), 1, "error: a bad study"),  # SystemExit("…"), as the commands fail
    (("raise",), 1, "RuntimeError: a bug in the job"),  # the traceback, as Python prints it
])
def test_the_client_exits_as_the_job_did(server, argv, code, stderr):
    proc = client(*argv)
    assert proc.returncode == code and stderr in proc.stderr


def test_a_signal_to_the_client_reaches_the_job(server, tmp_path):
    proc = started("trap", str(tmp_path / "mark"))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 7 and (tmp_path / "mark").read_text() == "stopped"


def test_a_job_killed_by_a_signal_kills_its_client_with_it(server):
    proc = started("sleep")
    proc.send_signal(signal.SIGTERM)  # the job does not handle it: it dies of it, and so does the client
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert client("die").returncode == -signal.SIGKILL  # a signal the client cannot set a handler for, too


def test_a_client_that_dies_takes_its_job_with_it(server, tmp_path):
    proc = started("trap", str(tmp_path / "mark"))
    proc.kill()  # SIGKILL: nothing to forward; the waiter sees the connection close and stops the job
    proc.wait()
    mark, deadline = tmp_path / "mark", time.monotonic() + 30
    while not (mark.exists() and mark.read_text() == "stopped") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mark.read_text() == "stopped"


def test_without_a_server_the_command_runs_in_place(tmp_path, monkeypatch):
    monkeypatch.delenv(forkserver.ENV, raising=False)
    assert client("exit", "0").returncode == 99
    monkeypatch.setenv(forkserver.ENV, "scaling-no-such-server")
    assert client("exit", "0").returncode == 99


def test_the_server_ends_with_its_owner(tmp_path, monkeypatch):
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "preloaded.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path / "log")], stdout=subprocess.PIPE, text=True)
    monkeypatch.setenv(forkserver.ENV, owner.stdout.readline().strip())
    assert client("exit", "0").returncode == 0
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 30
    while client("exit", "0").returncode != 99 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client("exit", "0").returncode == 99  # the server is gone: the command runs in place


def test_the_server_serves_only_its_own_user(tmp_path, monkeypatch):
    """A server expecting another uid refuses this one's connection: the command runs in place, and the log says
    why (as root the test cannot connect as another user, so the server is made to expect one)."""
    (tmp_path / "job.py").write_text(JOB)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    name = f"scaling-test-{os.getpid()}"
    code = ("import os, socket, sys, job\nfrom scaling import forkserver\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind('\\0' + sys.argv[1]); s.listen()\n"
            "print('ready', flush=True)\n"
            "forkserver.serve(s, int(sys.argv[2]), job.run, uid=os.getuid() + 1)")
    server = subprocess.Popen([sys.executable, "-c", code, name, str(os.getpid())], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        monkeypatch.setenv(forkserver.ENV, name)
        assert client("exit", "0").returncode == 99
        assert f"refused a connection from uid {os.getuid()}" in server.stdout.readline()
    finally:
        server.kill()
        server.wait()
