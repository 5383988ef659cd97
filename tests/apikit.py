"""Helpers for the API tests (test_api_server.py, test_dashboard_auth.py): the real tornado-served `Api` on an
ephemeral 127.0.0.1 port, in its own event loop on a thread, and raw HTTP exchanges with it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from halton_meter.serve.api import Api

TOKEN = "t" * 43


class ApiThread:
    def __init__(self, api: Api, loop: asyncio.AbstractEventLoop) -> None:
        self.api, self.loop = api, loop

    @property
    def port(self) -> int:
        return self.api.port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, trust_env=False, **{"timeout": 10, **kwargs})

    def bearer(self) -> dict[str, str]:
        return {"authorization": f"Bearer {TOKEN}"}

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.api.stop(), self.loop).result(10)

    def login(self, client: httpx.Client) -> str:
        """Sign `client` in the way a browser does; the session id."""
        url = client.post("/v1/login-codes", headers=self.bearer()).json()["url"]
        response = client.get(url)
        assert response.status_code == 303, response.text
        return response.cookies["halton_meter_session"]


@contextmanager
def running_api(paths: Any = None, **options: Any) -> Iterator[ApiThread]:
    """An `Api` (token TOKEN) serving on a real loopback socket until the block ends."""
    sock = socket.create_server(("127.0.0.1", 0))
    api = Api(sock.getsockname()[1], TOKEN, paths, **options)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)

        def start() -> None:
            api.start(sock)
            ready.set()

        loop.call_soon(start)
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    handle = ApiThread(api, loop)
    try:
        yield handle
    finally:
        if not api.stopping:
            handle.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        sock.close()


def raw(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes (PORT replaced by the port); everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request.replace(b"PORT", str(port).encode()))
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                break
            data += chunk
        return data


def parse(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body
