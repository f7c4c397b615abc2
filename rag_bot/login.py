"""The chat UI's login (`ui.auth`): the credentials check Gradio calls, and a throttle in front of
Gradio's `/login` route that slows password guessing without ever waiting on the server's event loop.

Each failed login for a user name (every unknown name counts as one) and from a client address
doubles the time before the next attempt for that name or address is heard, from `base` seconds up to
`cap`; an attempt made sooner is refused at once with HTTP 429 and a `Retry-After` header. A good
login clears both counts. Nothing sleeps: another person's page, or another login, is answered as
fast as ever while a guesser is being held back.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

LOGIN_PATHS = ("/login", "/login/")
OTHER_NAMES = "\0other"  # every wrong user name shares one count: guessing names is slowed too
MAX_ADDRESSES = 4096  # addresses with failures counted; the oldest go first beyond this


class Credentials:
    """`ui.auth` ("user:password") as the check Gradio calls: constant-time, no waiting."""

    def __init__(self, auth: str) -> None:
        user, _, password = auth.partition(":")
        self.user, self._password = user, password.encode()

    def __call__(self, username: str, password: str) -> bool:
        return bool(hmac.compare_digest(username.encode(), self.user.encode())
                    & hmac.compare_digest(password.encode(), self._password))


class LoginThrottle:
    """Counts failed logins per user name and per client address, and says how long the next attempt
    must wait (`retry_after`); `clock` is injectable for tests."""

    def __init__(self, user: str, base: float = 0.25, cap: float = 8.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.user, self.base, self.cap, self._clock = user, base, cap, clock
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}  # key -> (failures in a row, last at)
        self._checking: set[tuple[str, str]] = set()  # keys with an attempt being checked now
        self._lock = threading.Lock()

    def _keys(self, username: str, address: str) -> list[tuple[str, str]]:
        return [("name", username if username == self.user else OTHER_NAMES), ("address", address)]

    def delay(self, failures: int) -> float:
        """The wait after `failures` failures in a row: 0, then base, 2 x base, ... up to cap."""
        return min(self.cap, self.base * 2 ** (failures - 1)) if failures else 0.0

    def retry_after(self, username: str, address: str) -> float:
        """Seconds before an attempt for `username` from `address` is heard after its failures (0: now)."""
        with self._lock:
            return self._retry_after(self._keys(username, address))

    def begin(self, username: str, address: str) -> float:
        """Admit an attempt now (0) or say how long to wait: after a failure, as `retry_after`, and while
        another attempt for the same name or address is being checked (so that guesses sent in parallel
        do not all pass before the first failure counts). An admitted attempt must be `record`ed."""
        keys = self._keys(username, address)
        with self._lock:
            if any(key in self._checking for key in keys):
                return self.base
            wait = self._retry_after(keys)
            if wait <= 0:
                self._checking.update(keys)
            return wait

    def _retry_after(self, keys: list[tuple[str, str]]) -> float:
        now = self._clock()
        counts = [self._failures.get(key) for key in keys]
        return max([0.0] + [last + self.delay(failures) - now for failures, last in filter(None, counts)])

    def record(self, username: str, address: str, ok: bool | None) -> None:
        """Count a failure for the name and the address, or clear both after a good login (`ok` None: the
        attempt had no outcome, nothing is counted); ends the attempt `begin` admitted."""
        with self._lock:
            self._checking.difference_update(self._keys(username, address))
            if ok is None:
                return
            for key in self._keys(username, address):
                if ok:
                    self._failures.pop(key, None)
                else:
                    self._failures[key] = (self._failures.get(key, (0, 0.0))[0] + 1, self._clock())
            if len(self._failures) > MAX_ADDRESSES:
                oldest = sorted(self._failures, key=lambda key: self._failures[key][1])
                for key in oldest[: len(self._failures) - MAX_ADDRESSES]:
                    self._failures.pop(key)
        if ok is False:
            log.warning("failed login for user %r from %s", username, address)

    @property
    def counted(self) -> int:
        """How many names and addresses have failures counted."""
        return len(self._failures)


class LoginGuard:
    """ASGI middleware in front of the app's `POST /login`: an attempt that comes before its
    `retry_after` gets a 429 at once; the others go through, and their outcome is counted."""

    def __init__(self, app: Callable[..., Awaitable[None]], throttle: LoginThrottle) -> None:
        self.app, self.throttle = app, throttle

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in LOGIN_PATHS:
            await self.app(scope, receive, send)
            return
        body, messages = await _read_body(receive)
        username = (parse_qs(body.decode("utf-8", "replace")).get("username") or [""])[0].strip()
        address = (scope.get("client") or ("unknown",))[0]
        wait = self.throttle.begin(username, address)
        if wait > 0:
            await _too_soon(send, wait)
            return
        status: list[int] = []

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        async def watched(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        outcome: bool | None = None
        try:
            await self.app(scope, replay, watched)
            if status and status[0] in (200, 400):  # 400: Gradio's "Incorrect credentials."
                outcome = status[0] == 200
        finally:
            self.throttle.record(username, address, ok=outcome)


async def _read_body(receive: Callable[[], Awaitable[dict]]) -> tuple[bytes, list[dict]]:
    messages, chunks = [], []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks), messages


async def _too_soon(send: Callable[[dict], Awaitable[None]], wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    body = json.dumps({"detail": f"Too many failed logins: try again in {seconds} s."}).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", str(seconds).encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
