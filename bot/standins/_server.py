"""Shared base for the HTTP fakes: a real stdlib server on 127.0.0.1 in a daemon thread."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Recorded:
    """One HTTP request as the fake received it. Header names are lower-cased."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    client_port: int = 0  # which TCP connection carried it: shows connection reuse

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int  # 0 means: close the socket without answering
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, obj: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(obj).encode(), {"Content-Type": JSON_TYPE, **(headers or {})})


def text_reply(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Reply:
    return Reply(status, text.encode(), {"Content-Type": content_type})


def redirect_reply(location: str) -> Reply:
    return Reply(302, b"", {"Location": location})


def add_query(url: str, params: dict[str, str | None]) -> str:
    """Append params (None values skipped) to a URL that may already carry a query."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{url}{'&' if '?' in url else '?'}{query}"


@dataclass
class _Injection:
    matches: Callable[[str], bool]
    reply: Reply
    remaining: int


@dataclass
class _Slowdown:
    matches: Callable[[Recorded], bool]
    seconds: float
    remaining: int


# -- test hooks (not claims about any service): requests held until the test releases them --


class Held:
    """One request a fake stopped as it arrived (see FakeServer.hold_next)."""

    def __init__(self, matches: Callable[[Recorded], bool]) -> None:
        self.matches = matches
        self.request: Recorded | None = None
        self.arrived_at: float | None = None  # time.monotonic() when it arrived
        self._reached = threading.Event()
        self._released = threading.Event()

    def take(self, req: Recorded) -> bool:
        """Whether this hold stops `req` (called under the fake's lock)."""
        if self.request is None and self.matches(req):
            self.request = req  # taken: no other request matches it any more
            return True
        return False

    def wait_reached(self, timeout: float) -> Recorded:
        """The held request, once it has arrived; fails after `timeout` seconds."""
        if not self._reached.wait(timeout):
            raise AssertionError(f"no request to hold arrived within {timeout}s")
        assert self.request is not None
        return self.request

    @property
    def reached(self) -> bool:
        return self._reached.is_set()

    def release(self) -> None:
        self._released.set()

    def wait(self, stopping: threading.Event) -> None:
        """Block the fake's handler thread until released (or the fake stops)."""
        self.arrived_at = time.monotonic()
        self._reached.set()
        while not self._released.wait(0.05) and not stopping.is_set():
            pass


class Gate(Held):
    """Every matching request, stopped as it arrives until the gate opens (`release`)."""

    def __init__(self, matches: Callable[[Recorded], bool]) -> None:
        super().__init__(matches)
        self.arrived: list[Recorded] = []
        self._count = threading.Condition()

    def take(self, req: Recorded) -> bool:
        if self._released.is_set() or not self.matches(req):
            return False
        with self._count:
            self.arrived.append(req)
            self._count.notify_all()
        return True

    def wait_arrived(self, count: int, timeout: float) -> list[Recorded]:
        """The first `count` requests stopped here, once they have all arrived."""
        with self._count:
            if not self._count.wait_for(lambda: len(self.arrived) >= count, timeout):
                raise AssertionError(
                    f"{len(self.arrived)} of {count} requests reached the gate in {timeout}s"
                )
            return list(self.arrived[:count])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections must not pin threads forever
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every answer, which no real service shows.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        form: dict[str, str] = {}
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        port = int(self.client_address[1]) if self.client_address else 0
        req = Recorded(self.command, parts.path, query, form, headers, body, port)
        reply = self.server.fake._respond(req)
        if reply.status == 0:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections under a benchmark's load

    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer's getfqdn(), which can stall on reverse DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # client disconnects are normal in tests; handler bugs land in FakeServer.errors


class FakeServer:
    """Base for fakes: subclasses implement handle(), which runs under self._lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._seq = 0  # bumped on every request so wait_for() can wake up
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._injections: list[_Injection] = []
        self.requests: list[Recorded] = []
        self.errors: list[str] = []  # tracebacks of bugs inside the fake itself
        self.delay: float = 0.0
        self._slowdowns: list[_Slowdown] = []
        # A test's hook, run as each request arrives (outside the lock), before the answer:
        # e.g. to make the bot's database stop answering at an exact step of a flow.
        self.on_request: Callable[[Recorded], None] | None = None
        # Hooks run under the lock just before and after each answer is made: a test may
        # change the fake for that one request, or file the answer as it sees fit.
        self.before_answer: Callable[[Recorded], None] | None = None
        self.after_answer: Callable[[Recorded, Reply], None] | None = None
        self.answered = 0  # answers made so far
        self._holds: list[Held] = []  # every hold asked for, released at the latest by stop()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Self:
        if self._httpd is None:
            self._stopping.clear()
            self._httpd = _HTTPServer(self)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=type(self).__name__,
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self.release_holds()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # cut short any configured delay
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._httpd.server_port}"

    # -- request plumbing ----------------------------------------------------------------------
    def handle(self, req: Recorded) -> Reply:
        raise NotImplementedError

    def _respond(self, req: Recorded) -> Reply:
        with self._lock:
            held = next((h for h in self._holds if h.take(req)), None)
        if held is not None:
            held.wait(self._stopping)
        with self._cond:
            self.requests.append(req)
            self._bump()
            pause = self.delay + self._take_slowdown(req)
        hook = self.on_request
        if hook is not None:
            hook(req)
        if pause > 0:
            self._stopping.wait(pause)
        with self._cond:
            try:
                if self.before_answer is not None:
                    self.before_answer(req)
                reply = self.handle(req)
                if self.after_answer is not None:
                    self.after_answer(req, reply)
            except Exception:
                self.errors.append(traceback.format_exc())
                reply = text_reply(500, self.errors[-1])
            self.answered += 1
            self._bump()
        return reply

    def _bump(self) -> None:
        self._seq += 1
        self._cond.notify_all()

    def _inject(self, matches: Callable[[str], bool], reply: Reply, count: int) -> None:
        with self._lock:
            self._injections.append(_Injection(matches, reply, count))

    def slow_next(
        self, matches: Callable[[Recorded], bool], seconds: float, count: int = 1
    ) -> None:
        """Hold the next `count` matching requests for `seconds` before answering them."""
        with self._lock:
            self._slowdowns.append(_Slowdown(matches, seconds, count))

    def _take_slowdown(self, req: Recorded) -> float:
        for slow in self._slowdowns:
            if slow.remaining > 0 and slow.matches(req):
                slow.remaining -= 1
                return slow.seconds
        return 0.0

    def _take_injected(self, key: str) -> Reply | None:
        for inj in self._injections:
            if inj.remaining > 0 and inj.matches(key):
                inj.remaining -= 1
                return inj.reply
        return None

    # -- test helpers --------------------------------------------------------------------------
    def _moved(self, seen: int) -> bool:
        return self._seq != seen

    def hold_next(self, matches: Callable[[Recorded], bool]) -> Held:
        """Stop the next request that `matches` as it arrives, until `Held.release()`.

        It is then recorded and answered as usual. `stop()` releases every hold, so a test
        that fails midway never leaves a request (or the bot behind it) hanging.
        """
        held = Held(matches)
        with self._lock:
            self._holds.append(held)
        return held

    def hold_every(self, matches: Callable[[Recorded], bool]) -> Gate:
        """Stop every request that `matches` until `Gate.release()` (then none any more)."""
        gate = Gate(matches)
        with self._lock:
            self._holds.append(gate)
        return gate

    def release_holds(self) -> None:
        """Let every held request go (teardown: before the bot behind them is stopped)."""
        with self._lock:
            holds = list(self._holds)
        for held in holds:
            held.release()

    def forget(self) -> None:
        """Drop the requests recorded so far (a long benchmark's lists grow without end)."""
        with self._lock:
            self.requests.clear()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Return predicate()'s first truthy value, re-checking whenever a request arrives.

        The predicate runs outside the lock (it may itself trigger requests to this fake); the
        short wait cap also lets it watch state outside the fake, such as a database.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = self._seq
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with self._lock:
                    recent = [f"{r.method} {r.path}" for r in self.requests[-10:]]
                raise AssertionError(
                    f"{type(self).__name__}: condition not met within {timeout}s; "
                    f"last requests: {recent or 'none'}; fake errors: {len(self.errors)}"
                )
            with self._cond:
                self._cond.wait_for(partial(self._moved, seen), timeout=min(remaining, 0.05))
