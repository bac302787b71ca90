"""`vcc-bot serve` replicas as real processes, and a load balancer in front of them.

A replica is started the way an operator starts one (its own process, an explicit
environment, no stray .env), answers /healthz once it is ready, and is stopped with
SIGTERM (graceful) or SIGKILL (a crash). The balancer is a small TCP proxy on the public
port: each new connection goes to the next replica in turn, skipping one that refuses
the connection, as a layer-4 balancer does; a test may steer new connections to one
replica to make a particular path happen. Everything started here is stopped by
`close()`, whatever the test did.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.waiting import free_port, wait_until

VCC_BOT = Path(sys.executable).parent / "vcc-bot"
HOST = "127.0.0.1"


def answers_healthz(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False  # not listening (yet, or any more)


class Replica:
    """One `vcc-bot serve` process on its own port; its output goes to `<name>.log`."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path, port: int) -> None:
        self.name = name
        self.port = port
        self.env = {**env, "HOST": HOST, "PORT": str(port)}
        self.cwd = cwd
        self.log_path = cwd / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<Replica {self.name} :{self.port}>"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Replica:
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [str(VCC_BOT), "serve"],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout: float = 30.0) -> Replica:
        """Wait until /healthz answers 200; fail with the log if the process exits first."""
        try:
            wait_until(
                lambda: not self.running or answers_healthz(self.url),
                timeout,
                f"{self.name} to answer /healthz",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()}") from None
        assert self.running, f"{self.name} exited while starting:\n{self.log()}"
        return self

    def send(self, sig: signal.Signals) -> float:
        """Send `sig`; returns when it was sent (time.monotonic())."""
        assert self.proc is not None
        sent = time.monotonic()
        self.proc.send_signal(sig)
        return sent

    def terminate(self) -> float:
        return self.send(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as a crash or an OOM kill leaves it."""
        self.send(signal.SIGKILL)
        self.wait_exit(10)

    def wait_exit(self, timeout: float) -> int:
        """The exit code (negative: killed by that signal); fails if still running."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running {timeout}s later:\n{self.log()}"
            ) from None

    def accepts_connections(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1):
                return True
        except OSError:  # refused: nothing listens on the port any more
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop it whatever its state: SIGTERM, then SIGKILL if it does not go."""
        if not self.running:
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Fleet:
    """The replicas of one test, all on one database and one environment; `close()`
    stops every one still running."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}
        self.env |= env
        self.cwd = cwd
        self.replicas: list[Replica] = []

    def launch(self, name: str, *, port: int | None = None, **settings: str) -> Replica:
        """Start a replica (on a free port, or `port`) without waiting for it."""
        replica = Replica(name, self.env | settings, self.cwd, port or free_port())
        self.replicas.append(replica)
        return replica.start()

    def start(self, *names: str, **settings: str) -> list[Replica]:
        """Start replicas together, then wait until each answers /healthz."""
        started = [self.launch(name, **settings) for name in names]
        for replica in started:
            replica.wait_ready()
        return started

    def close(self) -> None:
        for replica in self.replicas:  # all told at once, then each waited for
            if replica.running:
                with contextlib.suppress(OSError):
                    replica.terminate()
        for replica in self.replicas:
            with contextlib.suppress(Exception):
                replica.stop()

    def logs(self, lines: int = 40) -> str:
        """The end of each replica's log, for a failing test's report."""
        return "\n".join(
            f"--- {r.name} ({r.log_path}) ---\n" + "\n".join(r.log().splitlines()[-lines:])
            for r in self.replicas
        )


class Balancer:
    """A round-robin TCP load balancer on 127.0.0.1:port in front of replicas.

    Each new connection goes to the next replica that accepts it (a dead one is skipped,
    as a balancer retries a refused connect elsewhere); `routed` names the replica of
    each connection in order. Clients that must reach a chosen replica on every request
    send `Connection: close`, so that no kept-alive connection carries a request to the
    replica of an earlier one.
    """

    def __init__(self, port: int, replicas: list[Replica]) -> None:
        self.port = port
        self.replicas = replicas
        self.routed: list[str] = []
        self._next = 0
        self._steered: Replica | None = None
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closing = threading.Event()
        self._listener = socket.create_server((HOST, port))
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, name="balancer", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Balancer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def steer(self, replica: Replica) -> Iterator[None]:
        """New connections go to `replica` only (refused if it is down) while inside."""
        with self._lock:
            self._steered = replica
        try:
            yield
        finally:
            with self._lock:
                self._steered = None

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            sockets, self._sockets = set(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _candidates(self) -> list[Replica]:
        with self._lock:
            if self._steered is not None:
                return [self._steered]
            start, self._next = self._next, (self._next + 1) % len(self.replicas)
        return self.replicas[start:] + self.replicas[:start]

    def _serve(self, client: socket.socket) -> None:
        for replica in self._candidates():
            try:
                upstream = socket.create_connection((HOST, replica.port), timeout=2)
            except OSError:
                continue  # refused: try the next one
            upstream.settimeout(None)
            with self._lock:
                self.routed.append(replica.name)
                self._sockets |= {client, upstream}
            pump = threading.Thread(target=_pipe, args=(client, upstream), daemon=True)
            pump.start()
            _pipe(upstream, client)
            pump.join()
            with self._lock:
                self._sockets -= {client, upstream}
            upstream.close()
            break
        client.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes until `source` ends, then end `sink`'s side too (half-close)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass  # reset: the process behind it died, or the balancer is closing
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
