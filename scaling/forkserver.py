"""Local jobs without the imports: one warm process forks every pipeline job of a local study.

Each job of a local study (``snakemake --cores N``) is a new ``python -m scaling.cli …`` process that, before any
work, imports torch (about 2 s on a 2-core machine), torch's compiler, which ``torch.optim`` loads for its first
optimizer (2 s more), pandas, pyarrow and the rest. Over the then default study's 50 jobs that was about 150 of its
740 core-seconds. The remedy is the one of :mod:`multiprocessing`'s ``forkserver`` and of PyTorch's DataLoader
workers (which fork after torch is imported), applied to whole commands:

- **Server.** The Snakefile's ``onstart`` starts it for local execution on a machine without a GPU
  (:func:`start`; CUDA does not survive a fork once initialized). It accepts connections on a Unix socket in
  Linux's abstract namespace (no file to clean up) and imports the jobs' modules once, in order, forking the jobs
  that come meanwhile. It serves only processes of its own user: the peer's uid is checked with ``SO_PEERCRED``.
- **Client.** A ``scaling`` command (one that imports heavy modules: ``scaling.cli.SERVED``) that finds the
  server's name in :data:`ENV` (jobs inherit it from Snakemake) sends its arguments, working directory,
  environment, ignored signals and standard streams (the file descriptors themselves) and waits (:func:`delegate`).
- **Waiter and job.** For each request the server forks a waiter, which forks the job. The job takes on the
  client's directory, environment, signal dispositions and streams, and runs the command. The waiter forwards
  the signals the client receives (Snakemake stopping a job, Ctrl-C) and sends back the job's exit status, which
  the client exits with. A client that dies takes its job with it (SIGTERM: a trainer checkpoints and stops).

Whenever that path is not there (no server, not Linux, a server that failed while starting), the command runs in
the client's own process, as it would without a server. Jobs submitted to a cluster never use one. The server ends
when the Snakemake process that started it ends; it runs the code it imported at the start, as Snakemake does.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence

ENV = "SCALING_FORKSERVER"  # the server's socket name, in the environment of the jobs it serves
KILL_AFTER_S = 60  # a job whose client is gone gets SIGTERM, then SIGKILL this much later (submitit's grace)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGTSTP, signal.SIGCONT)  # Ctrl-Z and fg too
_LENGTH = struct.Struct("!I")  # a request's length, before its JSON
_CREDENTIALS = struct.Struct("3i")  # SO_PEERCRED: pid, uid, gid
_PR_SET_PDEATHSIG, _PR_SET_NAME = 1, 15  # prctl(2): the signal a process gets when its parent ends; its name
# the limits a job takes on from its client (`ulimit` in a rule's shell line), with its nice value and CPUs
_RLIMITS = ("RLIMIT_NOFILE", "RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CPU", "RLIMIT_CORE", "RLIMIT_FSIZE",
            "RLIMIT_NPROC", "RLIMIT_MEMLOCK")
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def start(target: str, preload: Sequence[str], log: str, wait: bool = False) -> str | None:
    """Start a server whose jobs run ``target`` (``"module:function"``, called with the command's arguments) for
    this process's children: its name goes into ``os.environ[ENV]``. Returns the name, or None where there is no
    server (not Linux). The server imports ``preload`` in order, forking the jobs that come meanwhile (they import
    the rest themselves); ``wait``: return once it has imported them all. It writes one line per job to ``log``."""
    if not sys.platform.startswith("linux"):
        return None
    name = f"scaling-{os.getuid()}-{os.getpid()}-{os.urandom(8).hex()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)  # bound and listening before the server starts: early jobs wait in the backlog
    listener.listen(64)
    imported, done = os.pipe()  # the server closes `done` once it has imported `preload`
    os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
    with listener, open(log, "a") as out:
        subprocess.Popen([sys.executable, "-m", "scaling.forkserver", str(listener.fileno()), str(done),
                          str(os.getpid()), target, *preload], pass_fds=[listener.fileno(), done],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)  # Ctrl-C reaches jobs through their clients, once
    os.close(done)
    with open(imported, "rb") as f:
        if wait:
            f.read()
    os.environ[ENV] = name
    return name


def delegate(argv: Sequence[str]) -> int | None:
    """Run the command ``argv`` in the server named in :data:`ENV`; return its exit code, or None where it was not
    run there (no server: the caller runs it). A job killed by a signal kills this process with the same signal."""
    name = os.environ.get(ENV)
    if not name:
        return None
    ignored = [s for s in FORWARDED if signal.getsignal(s) is signal.SIG_IGN]
    umask = os.umask(0)
    os.umask(umask)
    request = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                          "ignored": [int(s) for s in ignored], "nice": os.getpriority(os.PRIO_PROCESS, 0),
                          "cpus": sorted(os.sched_getaffinity(0)),
                          "limits": {r: resource.getrlimit(getattr(resource, r)) for r in _RLIMITS}}).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect("\0" + name)
    except OSError:
        return None
    if _peer_uid(conn) != os.getuid():  # a name freed by a server that died, taken by another user: not ours
        conn.close()
        return None
    received = []

    def forward(signum: int, frame) -> None:  # the waiter passes it on to the job, once there is one
        received.append(signum)
        try:
            conn.sendall(b"%d\n" % signum)
        except OSError:  # the server is gone
            pass

    previous = {s: signal.signal(s, forward) for s in FORWARDED if s not in ignored}
    started = status = b""
    try:
        socket.send_fds(conn, [_LENGTH.pack(len(request))], [0, 1, 2])
        conn.sendall(request)
        replies = conn.makefile("rb")
        started = replies.readline()  # the job's pid, once the server has forked it
        if started:
            status = replies.readline()  # its wait status, once it has ended
    except OSError:
        pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if not started:  # the server ended before forking the job: nothing ran; the caller runs it, signals and all
        for signum in received:
            os.kill(os.getpid(), signum)
        return None
    if not status:
        print(f"error: the job server ended while running the job ({started.decode().strip()})", file=sys.stderr)
        return 1
    code = os.waitstatus_to_exitcode(int(status))
    if code < 0:  # killed by a signal: so is this process, which the shell reports the same way
        _die_of(-code)
    return code


def _die_of(signum: int) -> None:
    """End this process with signal ``signum``, as if it had not been caught."""
    if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those cannot be caught, nor set
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _peer_uid(conn: socket.socket) -> int:
    """The user of the process at the other end of a Unix socket (``SO_PEERCRED``, set by the kernel)."""
    return _CREDENTIALS.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))[1]


def serve(listener: socket.socket, owner: int, run: Callable[[list[str]], object], preload: Sequence[str] = (),
          done: int | None = None, uid: int | None = None) -> None:
    """Fork a waiter for each connection until process ``owner`` ends; serve only peers of user ``uid`` (default:
    this process's). Import ``preload`` meanwhile, one module whenever no connection waits, then close ``done``."""
    uid = os.getuid() if uid is None else uid
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the waiters
    try:
        owner_ended = os.pidfd_open(owner)
    except ProcessLookupError:
        return
    pending, t0 = list(preload), time.perf_counter()
    while True:
        ready, _, _ = select.select([listener, owner_ended], [], [], 0 if pending else None)
        if owner_ended in ready:
            return
        if listener not in ready:
            importlib.import_module(pending.pop(0))
            if not pending:
                print(f"{time.strftime('%H:%M:%S')} imported {len(preload)} modules in "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
                if done is not None:
                    os.close(done)
                    done = None
            continue
        conn, _ = listener.accept()
        if _peer_uid(conn) != uid:  # checked before forking anything for it
            print(f"refused a connection from uid {_peer_uid(conn)} (serving uid {uid})", flush=True)
            conn.close()
            continue
        if os.fork() == 0:
            listener.close()
            os.close(owner_ended)
            if done is not None:
                os.close(done)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _wait(conn, run)
            finally:
                os._exit(0)
        conn.close()


def _wait(conn: socket.socket, run: Callable[[list[str]], object]) -> None:
    """The waiter: fork the client's job, forward its signals, send back the job's wait status."""
    conn.settimeout(10)  # a client that connects and says nothing does not hold a waiter
    head, fds, _, _ = socket.recv_fds(conn, _LENGTH.size, 3)
    head += _receive(conn, _LENGTH.size - len(head))
    request = json.loads(_receive(conn, _LENGTH.unpack(head)[0]))
    conn.settimeout(None)
    t0, waiter = time.perf_counter(), os.getpid()
    job = os.fork()
    if job == 0:
        conn.close()
        _job(request, fds, run, waiter)
    for fd in fds:
        os.close(fd)
    job_ended, pending, kill_at = os.pidfd_open(job), b"", None  # kill_at: once the client is gone
    try:
        conn.sendall(b"%d\n" % job)
    except OSError:
        kill_at = time.monotonic() + KILL_AFTER_S
        os.kill(job, signal.SIGTERM)
    while True:
        timeout = None if kill_at is None else max(0.0, kill_at - time.monotonic())
        ready, _, _ = select.select([job_ended] if kill_at else [job_ended, conn], [], [], timeout)
        if job_ended in ready:
            _, status = os.waitpid(job, 0)
            break
        if kill_at:  # stopped but still there
            os.kill(job, signal.SIGKILL)
            continue
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if not data:  # the client is gone (killed): stop its job as Snakemake would have, then for good
            kill_at = time.monotonic() + KILL_AFTER_S
            os.kill(job, signal.SIGTERM)
            continue
        *signals, pending = (pending + data).split(b"\n")
        for signum in map(int, signals):  # the job's process group has no terminal, which discards SIGTSTP
            os.kill(job, signal.SIGSTOP if signum == signal.SIGTSTP else signum)
    command = " ".join(request["argv"][:1])
    print(f"{time.strftime('%H:%M:%S')} pid {job}: scaling {command}: exit {os.waitstatus_to_exitcode(status)} "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    if kill_at is None:
        try:
            conn.sendall(b"%d\n" % status)
        except OSError:
            pass


def _receive(conn: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from ``conn``."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client left before its request was complete")
        data += chunk
    return data


def _take_on(request: dict) -> None:
    """What a process of the client's would have had: its umask, nice value, CPUs and limits (lowered where the
    server's are higher; raising a hard limit is not allowed), its name as ``ps -o comm`` and ``top`` show it, and
    thread pools sized as Snakemake asks each job (``OMP_NUM_THREADS``: the server's libraries built theirs when
    they were imported)."""
    import threadpoolctl  # the job's: the server has imported it by now, with numpy

    os.umask(request["umask"])
    for set_it in (lambda: os.setpriority(os.PRIO_PROCESS, 0, request["nice"]),  # a lower one needs privileges
                   lambda: os.sched_setaffinity(0, request["cpus"]),
                   *(lambda name=name, limits=limits: resource.setrlimit(getattr(resource, name), tuple(limits))
                     for name, limits in request["limits"].items())):
        try:
            set_it()
        except (ValueError, OSError):
            pass
    _PRCTL(_PR_SET_NAME, ctypes.c_char_p(f"scaling {request['argv'][0] if request['argv'] else ''}"[:15].encode()))
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        threadpoolctl.threadpool_limits(int(threads))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))


def _job(request: dict, fds: list[int], run: Callable[[list[str]], object], waiter: int) -> None:
    """The job: take on the client's streams, directory, environment and signal dispositions, run the command and
    exit as a ``python -m`` process would (exit code, traceback, exit handlers). Never returns."""
    code, signum = 1, None
    try:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)  # a waiter that dies stops its job
        if os.getppid() != waiter:  # it died before that
            raise SystemExit("error: the job server's waiter ended before the job started")
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _take_on(request)
        tempfile.tempdir = None  # recomputed from this job's TMPDIR
        for s in (*FORWARDED, signal.SIGCHLD):
            signal.signal(s, signal.SIG_IGN if s in request["ignored"] else signal.SIG_DFL)
        if signal.SIGINT not in request["ignored"]:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.stdin = open(0, closefd=False)
        unbuffered = os.isatty(1) or bool(os.environ.get("PYTHONUNBUFFERED"))
        sys.stdout = open(1, "w", buffering=1 if unbuffered else -1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)
        sys.argv = ["scaling", *request["argv"]]
        run(request["argv"])
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = (e.code or 0) & 0xFF  # as the OS keeps it: sys.exit(-1) is 255
        else:
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        signum = signal.SIGINT  # as Python does after an uncaught KeyboardInterrupt: die of the signal
    except BaseException:
        traceback.print_exc()
    try:  # Python's own exit: wait for the threads the command started, run the exit handlers, flush
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = code or 120  # as Python when it cannot flush
    finally:
        if signum:
            _die_of(signum)
        os._exit(code)


def main() -> None:
    """``python -m scaling.forkserver LISTENER DONE OWNER TARGET [MODULE …]``, as :func:`start` runs it."""
    listener, done, owner, target, *preload = sys.argv[1:]
    # Forking a process that has imported torch, pyarrow and scipy (each starts an idle thread) is what DataLoader
    # workers do; Python ≥ 3.12 warns of it in general.
    warnings.filterwarnings("ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning)
    for fd in (int(listener), int(done)):  # nothing the imports start holds them
        os.set_inheritable(fd, False)
    module, function = target.split(":")
    serve(socket.socket(fileno=int(listener)), int(owner), getattr(importlib.import_module(module), function),
          preload, int(done))
    os._exit(0)  # its owner has ended: no interpreter shutdown (a second with torch loaded)


if __name__ == "__main__":
    main()
