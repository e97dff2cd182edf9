"""Fixtures: a real cloakroomd in a temporary data directory.

The binary is ``$CLOAKROOMD`` if set, else ``target/debug/cloakroomd`` of this repository
(``$CARGO_TARGET_DIR`` respected). Build it with ``cargo build -p cloakroomd``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

import cloakroom

ROOT = Path(__file__).resolve().parents[3]


def daemon_binary() -> Path:
    env = os.environ.get("CLOAKROOMD")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    return target / "debug" / "cloakroomd"


def require_binary(what: str, binary: Path, build: str, env: str) -> Path:
    """`binary`, or the test fails saying how to build it."""
    if not binary.is_file():
        pytest.fail(
            f"no {what} binary at {binary}; build it with `{build}` (or point ${env} at one)",
            pytrace=False,
        )
    return binary


class Daemon:
    """One cloakroomd process on ipc sockets in its own temporary data directory."""

    def __init__(self, extra: Optional[List[str]] = None) -> None:
        self.binary = require_binary(
            "cloakroomd", daemon_binary(), "cargo build -p cloakroomd", "CLOAKROOMD"
        )
        # ipc paths are limited to ~100 bytes: keep the directory short.
        self.dir = Path(tempfile.mkdtemp(prefix="crd-", dir="/tmp"))
        self.endpoint = f"ipc://{self.dir}/cloakroomd.sock"
        self.events = f"ipc://{self.dir}/events.sock"
        self.extra = extra or []
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self.log = self.dir / "cloakroomd.log"

    def argv(self) -> List[str]:
        return [
            str(self.binary),
            "--data-dir",
            str(self.dir / "data"),
            "--bind",
            self.endpoint,
            "--events",
            self.events,
            *self.extra,
        ]

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        with cloakroom.Client(self.endpoint, timeout=0.5) as c:
            while True:
                if self.proc.poll() is not None:
                    pytest.fail(
                        f"cloakroomd exited with {self.proc.returncode}: {self.tail()}", pytrace=False
                    )
                try:
                    c.ping()
                    return
                except cloakroom.Unavailable:
                    if time.monotonic() > deadline:
                        self.stop()
                        pytest.fail(f"cloakroomd did not answer PING in 30 s: {self.tail()}", pytrace=False)

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)
        self.proc = None

    def tail(self) -> str:
        return log_tail(self.log)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def has_verb(self, verb: str) -> bool:
        with cloakroom.Client(self.endpoint, timeout=5) as c:
            try:
                c.call(cloakroom.Call(verb, {}, lambda r: None))
            except cloakroom.UnknownVerb:
                return False
            except cloakroom.CloakroomError:
                pass  # BAD_REQUEST for the empty body: the verb exists
        return True


def end_process(proc: subprocess.Popen) -> None:
    """Terminates `proc` if it still runs (killed after 10 s) and reaps it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(log: Path) -> str:
    """The last 15 lines of a log file, on one line."""
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-15:])
    except OSError:
        return "(no log)"


def running_daemon() -> Iterator[Daemon]:
    d = Daemon()
    d.start()
    yield d
    d.cleanup()


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    yield from running_daemon()


@pytest.fixture
def own_daemon() -> Iterator[Daemon]:
    """A daemon of the test's own, which the test may stop and restart."""
    yield from running_daemon()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[cloakroom.Client]:
    with cloakroom.Client(daemon.endpoint, timeout=5) as c:
        yield c


@pytest.fixture(scope="session")
def cookie_verbs(daemon: Daemon) -> None:
    """Skips, saying why, while the daemon answers UNKNOWN_VERB for the cookie verbs."""
    if not daemon.has_verb("OPEN"):
        pytest.skip("this cloakroomd has no cookie verbs yet (OPEN answers UNKNOWN_VERB)")


@pytest.fixture
def user() -> str:
    """A user id no other test (or engineer) uses."""
    return f"py-{uuid.uuid4().hex[:12]}"
