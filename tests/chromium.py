"""Drive Debian's headless chromium over the DevTools protocol, with the standard library only.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol commands from its fd 3 and
writes replies and events to its fd 4, each a JSON message ending in a NUL byte. That needs no
port, no websocket client and no download; one browser serves several pages (tabs), each attached
as a flat session whose events (console messages, exceptions, network failures) are kept per page.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

INSTALL = ["apt-get", "install", "-y", "-qq", "chromium"]  # Debian's package, as install_chromium installs it

# Known to work headless on a CI machine without a GPU, display, sandbox or network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

LOCAL_SCHEMES = {"file", "data", "blob", "about"}


class ChromiumUnavailable(RuntimeError):
    """There is no chromium on PATH, and it could not be installed: the message names the command to run."""


def find_chromium() -> str:
    """The chromium executable on PATH; ChromiumUnavailable naming the install command otherwise."""
    path = shutil.which("chromium")
    if path is None:
        raise ChromiumUnavailable(f"no `chromium` on PATH; install Debian's: {' '.join(INSTALL)}")
    return path


def install_chromium() -> str:
    """The chromium executable, Debian's package installed first (apt-get, as root) when there is none on PATH.

    The browser tests get their browser as the SLURM tests get their cluster (tests/slurm/start.sh): installed on
    first use. As there, the package lists are refreshed only when installing from them fails (none yet, or stale).
    """
    if path := shutil.which("chromium"):
        return path
    command = " ".join(INSTALL)
    if os.geteuid() != 0:
        raise ChromiumUnavailable(f"no `chromium` on PATH, and installing it needs root: run `{command}` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        proc = subprocess.run(INSTALL, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            proc = subprocess.run(INSTALL, env=env, capture_output=True, text=True)
    except OSError as error:  # no apt-get: not Debian
        raise ChromiumUnavailable(f"no `chromium` on PATH, and `{command}` could not run: {error}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise ChromiumUnavailable(f"no `chromium` on PATH, and `{command}` failed (exit {proc.returncode}):\n{tail}")
    return find_chromium()


class BrowserError(RuntimeError):
    """The browser or a page failed: a protocol error, a crash, a timeout or a JavaScript exception."""


class Chromium:
    """One headless chromium with a fresh profile; ``with Chromium() as browser: browser.open(url)``."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        executable = executable or find_chromium()
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        self._stderr_path = Path(self._profile.name) / "stderr.log"
        # Pipe ends at fd >= 10, so that moving them to 3 and 4 in the child cannot clobber each other.
        to_browser, self._out = (_high_fd(fd) for fd in os.pipe())
        self._in, from_browser = (_high_fd(fd) for fd in os.pipe())

        def pipe_to_fds_3_and_4():  # runs in the child, between fork and exec
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        args = [executable, *FLAGS, f"--user-data-dir={self._profile.name}",
                "--remote-debugging-pipe", "about:blank"]
        try:
            with open(self._stderr_path, "wb") as stderr:
                # close_fds=False: close_fds runs after preexec_fn and would close the new fds 3 and 4;
                # Python's own descriptors are not inheritable, so nothing else leaks into the browser.
                self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=stderr, close_fds=False, preexec_fn=pipe_to_fds_3_and_4)
        except OSError:
            for fd in (to_browser, self._out, self._in, from_browser):
                os.close(fd)
            self._profile.cleanup()
            raise
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._pages: dict[str, Page] = {}
        try:
            self.version = self.send("Browser.getVersion")["product"]
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self, url: str, timeout: float | None = None) -> Page:
        """A new tab that has loaded ``url`` (its load event fired), recording its events from the start."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = self._pages[session] = Page(self, target, session, url)
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for(lambda: page.event("Page.loadEventFired"), f"{url} to load", timeout)
        return page

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one command and return its result; events that arrive meanwhile go to their pages."""
        self._next_id += 1
        message_id = self._next_id
        message = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            os.write(self._out, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"chromium has exited; {self.stderr_tail()}") from None
        reply = self.wait_for(lambda: self._replies.pop(message_id, None), f"the reply to {method}", timeout)
        if "error" in reply:
            raise BrowserError(f"{method} failed: {reply['error']}")
        return reply["result"]

    def wait_for(self, condition, what: str, timeout: float | None = None):
        """Read messages until ``condition()`` is truthy, and return it; BrowserError on timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not (value := condition()):
            self._read_message(what, deadline)
        return value

    def _read_message(self, what: str, deadline: float) -> None:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise BrowserError(f"timed out waiting for {what}; {self.stderr_tail()}")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium closed its pipe while waiting for {what}; {self.stderr_tail()}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message = json.loads(raw)
        if "id" in message:
            self._replies[message["id"]] = message
        elif message.get("sessionId") in self._pages:
            self._pages[message["sessionId"]].events.append(message)

    def stderr_tail(self, lines: int = 15) -> str:
        text = self._stderr_path.read_text(errors="replace") if self._stderr_path.exists() else ""
        return "chromium's stderr ends:\n" + "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.send("Browser.close", timeout=10)
                self._proc.wait(timeout=10)
            except (BrowserError, OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for fd in (self._in, self._out):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()


class Page:
    """One tab: evaluate JavaScript in it, and list what went wrong in it (``problems``)."""

    def __init__(self, browser: Chromium, target: str, session: str, url: str):
        self.browser, self.target, self.session, self.url = browser, target, session, url
        self.events: list[dict] = []

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})

    def event(self, method: str) -> dict | None:
        return next((e for e in self.events if e["method"] == method), None)

    def evaluate(self, expression: str, timeout: float | None = None):
        """The JSON value of ``expression`` (awaited if it is a promise); BrowserError if it throws."""
        reply = self.browser.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                       "returnByValue": True}, self.session, timeout)
        if "exceptionDetails" in reply:
            raise BrowserError(f"JavaScript threw: {_exception_text(reply['exceptionDetails'])}")
        return reply["result"].get("value")

    def problems(self) -> list[str]:
        """Uncaught exceptions, console errors, failed loads and requests that would leave the machine."""
        problems = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                problems.append(f"uncaught exception: {_exception_text(params['exceptionDetails'])}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
                problems.append(f"console.{params['type']}: {text}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                problems.append(f"browser log error ({entry['source']}): {entry['text']} {entry.get('url', '')}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                problems.append(f"failed to load a resource: {params.get('errorText')} ({params.get('type')})")
            elif method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if urlsplit(url).scheme not in LOCAL_SCHEMES:
                    problems.append(f"request for a non-local resource: {url[:200]}")
            elif method == "Inspector.targetCrashed":
                problems.append("the page crashed")
        return [_shorten(problem) for problem in problems]

    def warnings(self) -> list[str]:
        """console.warn messages (reported for context; snakemake's bundled Tailwind always warns)."""
        return [" ".join(str(a.get("value", "")) for a in e["params"]["args"]) for e in self.events
                if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "warning"]


def _exception_text(details: dict) -> str:
    exception = details.get("exception") or {}
    where = f"{details.get('url', '')}:{details.get('lineNumber', '?')}:{details.get('columnNumber', '?')}"
    return f"{exception.get('description') or details.get('text')} at {where}"


def _shorten(text: str, limit: int = 400) -> str:
    """At most ``limit`` characters: a broken figure's data URI would fill pages of test output."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high
