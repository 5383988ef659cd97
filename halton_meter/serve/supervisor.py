"""`halton-meter serve`: the foreground supervisor of the edge and the core, and host of the loopback API.

The supervisor binds the user-visible edge port itself and hands the socket to the edge process, so the
port never changes while `serve` lives, even when the edge restarts. The core listens on an ephemeral
internal port it publishes in `run/core.json`. Both children are restarted with exponential backoff if
they die; while the core is down the edge passes traffic through and counts gaps.

`runtime.json` is written once edge, core and API all answer, and removed on exit: it is the one source
of truth `run` and other commands read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import structlog

from halton_meter import __version__
from halton_meter.ca import ensure_ca
from halton_meter.clock import utc_stamp
from halton_meter.config import MAX_WORKERS, Config
from halton_meter.errors import ExitCode, HaltonError, PortInUseError
from halton_meter.paths import ensure_private_dir, write_atomic
from halton_meter.serve.api import Api, ensure_token
from halton_meter.serve.process import CONTROL_ENV, PARENT_PID_ENV, install_stop_handlers, portable

log = structlog.get_logger("halton_meter.supervisor")

READY_TIMEOUT = 60.0
MIGRATION_READY_TIMEOUT = 4 * 3600.0
"""After a child says `MIGRATING`: a database upgrade (a backup copy, then building rollups over every
call: about 17 s per million calls here) is never cut short by a restart."""
BACKOFF_START, BACKOFF_MAX, HEALTHY_RESET = 0.2, 30.0, 60.0
"""A child that dies is restarted after 0.2 s (the edge holds calls for a restarting core for a few
seconds, so a routine restart costs latency, not unmetered calls); one that keeps dying waits twice as long
each time, up to 30 s; a child that ran for a minute starts the count again."""


def port_holder(port: int) -> str | None:
    """`PID 1234 (python3)` for the process listening on a local TCP port, when the OS lets us see it."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                try:
                    name = psutil.Process(conn.pid).name()
                except psutil.Error:
                    name = "?"
                return f"PID {conn.pid} ({name})"
    except Exception:
        return None
    return None


def bind_loopback(port: int, role: str, flag: str) -> socket.socket:
    try:
        return socket.create_server(("127.0.0.1", port), backlog=1024)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            holder = port_holder(port)
            by = f" by {holder}" if holder else " by another process"
            raise PortInUseError(
                f"port {port} ({role}) is in use{by}; stop that process or choose another port with {flag} N"
            ) from None
        if exc.errno == errno.EACCES:
            raise PortInUseError(f"not allowed to listen on port {port} ({role}); choose another with {flag} N") from None
        raise


@dataclass
class Child:
    """One supervised process. `argv` is run with the current Python; `READY` on stdout means serving."""

    name: str
    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    last_exit: int | None = None
    _drain: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> bool:
        """Start and wait for READY. False when the process exits (or stays silent) first. The child's stdin
        is a pipe we hold: closing it is the portable stop (serve/process.py)."""
        extra: dict[str, object] = {"pass_fds": self.pass_fds} if self.pass_fds else {}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**self.env, CONTROL_ENV: "stdin"}, **extra,  # type: ignore[arg-type]
        )
        self.started_at = time.monotonic()
        assert self.proc.stdout is not None
        timeout = READY_TIMEOUT
        try:
            while True:
                line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
                if not line.startswith(b"MIGRATING"):
                    break
                log.warning("database upgrade under way: the core starts when it is done (calls pass through "
                            "unmetered meanwhile, counted as gaps)", child=self.name,
                            versions=line.decode(errors="replace").split()[1:])
                timeout = MIGRATION_READY_TIMEOUT
        except TimeoutError:
            line = b""
        if not line.startswith(b"READY"):
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            self.last_exit = await self.proc.wait()
            return False
        self._drain = asyncio.get_running_loop().create_task(self._discard_stdout())
        return True

    async def _discard_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while await self.proc.stdout.readline():
            pass

    async def stop(self, grace: float) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # end-of-file on the child's stdin: stop (every platform)
        if not portable():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            log.warning("child did not stop in time; killing it", child=self.name)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


class Supervisor:
    def __init__(self, config: Config, edge_port: int, api_port: int, announce: Callable[[dict[str, object]], None]):
        self.config = config
        self.paths = config.paths
        self.edge_port = edge_port
        self.api_port = api_port
        self.announce = announce
        self._stop = asyncio.Event()
        self._fallback: asyncio.Task[None] | None = None
        self.workers: list[Child] = []

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HALTON_METER_HOME"] = str(self.paths.home)
        env[PARENT_PID_ENV] = str(os.getpid())
        env["PYTHONUNBUFFERED"] = "1"
        return env

    async def run(self) -> int:
        paths = self.paths
        ensure_private_dir(paths.home)
        ensure_private_dir(paths.run_dir)
        lock = _acquire_lock(paths.run_dir / "serve.lock", paths.runtime)
        try:
            ensure_ca(paths)
            # The database is the core's business (it migrates it, and waits for it to be usable): the edge
            # starts whatever state it is in, so traffic flows even when metering cannot.
            edge_sock = bind_loopback(self.edge_port, "edge", "--edge-port")
            api_sock = bind_loopback(self.api_port, "api", "--api-port")
            return await self._serve(edge_sock, api_sock)
        finally:
            lock.close()

    async def _serve(self, edge_sock: socket.socket, api_sock: socket.socket) -> int:
        paths = self.paths
        loop = asyncio.get_running_loop()
        install_stop_handlers(loop, self._stop.set)
        edge_port, api_port = edge_sock.getsockname()[1], api_sock.getsockname()[1]
        handoff = not portable()
        if not handoff:
            # The edge binds the port itself (Windows cannot pass a listening socket to a child this way): we
            # checked it is free, and keep the number, so a restarted edge binds the same one.
            edge_sock.close()
        api = Api(api_port, token=ensure_token(paths), paths=paths)
        api.start(api_sock)
        env = self._child_env()
        count = self.config.workers()
        core = Child("core", ["-m", "halton_meter.core"], env)
        self.workers = [Child(f"core-worker-{i}", ["-m", "halton_meter.core", "--worker", str(i)], env)
                        for i in range(1, count)]
        listen = ["--listen-fd", str(edge_sock.fileno())] if handoff else ["--port", str(edge_port)]
        edge = Child(
            "edge",
            ["-m", "halton_meter.edge", *listen, "--api-port", str(api_port), "--cores", str(count)],
            env,
            pass_fds=(edge_sock.fileno(),) if handoff else (),
        )
        for path in paths.core_states(MAX_WORKERS):  # what any earlier serve left, whatever its count
            path.unlink(missing_ok=True)
        try:
            if not await core.start():
                # A database it cannot use, a port, a bug: the core says why on stderr (and in
                # core-error.json for `status`). Traffic must not wait for it: the edge starts anyway and the
                # core is retried with backoff (its workers start once it runs: they need its link).
                log.error("the core cannot start; the proxy passes traffic through unmetered (counted as gaps) "
                          "and the core is retried with backoff", code=core.last_exit)
            else:
                await self._start_workers()
            if not await edge.start():
                await self._stop_workers(self.config.shutdown_grace_seconds)
                await core.stop(self.config.shutdown_grace_seconds)
                return _child_failure(edge)
            runtime = {
                "edge_port": edge_port,
                "api_port": api_port,
                "ca_cert": str(paths.ca_cert),
                "client_bundle": str(paths.client_bundle),
                "pid": os.getpid(),
                "version": __version__,
                "db": str(paths.db),
                "cores": count,
                "started_at": utc_stamp(),
            }
            write_atomic(paths.runtime, json.dumps(runtime, indent=2).encode(), mode=0o600)
            self.announce(runtime)
            await self._watch([core, edge], edge_sock if handoff else None)
        finally:
            if self._fallback is not None:
                self._fallback.cancel()
            log.info("stopping")
            grace = self.config.shutdown_grace_seconds + 5
            # The cores first: they drain the calls in flight while the edge keeps their tunnels open (and
            # passes new calls through); the workers before the first core, which writes their last records;
            # then the edge, which has nothing left to cut.
            await self._stop_workers(grace)
            await core.stop(grace)
            await edge.stop(grace)
            await api.stop()
            _remove_runtime(paths.runtime)
            for path in paths.core_states(count):
                path.unlink(missing_ok=True)
        return 0

    async def _start_workers(self) -> None:
        """Start the workers side by side (each waits for the first core's link, which is up by now)."""
        stopped = [w for w in self.workers if w.proc is None or w.proc.returncode is not None]
        results = await asyncio.gather(*(w.start() for w in stopped))
        if not all(results):
            log.error("a core worker cannot start; the other cores take its share and it is retried",
                      codes=[w.last_exit for w, started in zip(stopped, results, strict=True) if not started])

    async def _stop_workers(self, grace: float) -> None:
        await asyncio.gather(*(w.stop(grace) for w in self.workers))

    async def _watch(self, children: list[Child], edge_sock: socket.socket | None = None) -> None:
        children = [*children, *self.workers]
        backoff = {c.name: BACKOFF_START for c in children}
        while not self._stop.is_set():
            waits = {asyncio.ensure_future(c.proc.wait()): c for c in children  # workers only while the first core runs
                     if c.proc is not None and (c not in self.workers or self._core_running(children))}
            stop_wait = asyncio.ensure_future(self._stop.wait())
            done, _ = await asyncio.wait([*waits, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            for fut in waits:
                if fut not in done:
                    fut.cancel()
            if stop_wait in done:
                return
            stop_wait.cancel()
            for fut in done:
                child = waits[fut]
                code = fut.result()
                if time.monotonic() - child.started_at > HEALTHY_RESET:
                    backoff[child.name] = BACKOFF_START
                delay = backoff[child.name]
                log.error("child exited; restarting", child=child.name, code=code, restart_in_s=delay)
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
                backoff[child.name] = min(delay * 2, BACKOFF_MAX)
                child.restarts += 1
                if child.name == "core":
                    # The first core owns the database: its workers stop with it (they journal what it had not
                    # acknowledged, and finish their calls), and only once they are gone does a new one start,
                    # so its recovery replays their journals. Then the workers start again.
                    await self._stop_workers(self.config.shutdown_grace_seconds + 5)
                if child.name.startswith("core-worker-") and not self._core_running(children):
                    continue  # restarted with the first core
                started = await child.start()
                if not started:
                    log.error("child failed to restart", child=child.name, code=child.last_exit)
                elif child.name == "core":
                    await self._start_workers()
                if child.name == "edge" and edge_sock is not None:
                    self._refuse_while_edge_down(edge_sock, down=not started)

    @staticmethod
    def _core_running(children: list[Child]) -> bool:
        return any(c.name == "core" and c.proc is not None and c.proc.returncode is None for c in children)

    def _refuse_while_edge_down(self, sock: socket.socket, down: bool) -> None:
        """While no edge can start, answer the proxy port ourselves with an immediate 503, so clients fail
        fast instead of hanging on a listening socket nobody accepts from; stop once an edge runs again."""
        if not down:
            if self._fallback is not None:
                self._fallback.cancel()
                self._fallback = None
            return
        if self._fallback is None or self._fallback.done():
            self._fallback = asyncio.get_running_loop().create_task(_answer_503(sock.dup()))


_EDGE_DOWN_BODY = b"halton-meter: the proxy cannot start; see `halton-meter status`\n"
EDGE_DOWN_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: "
                    + str(len(_EDGE_DOWN_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _EDGE_DOWN_BODY)


async def _answer_503(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    try:
        while True:
            conn, _ = await loop.sock_accept(sock)
            with contextlib.suppress(OSError):
                conn.setblocking(False)
                await asyncio.wait_for(loop.sock_sendall(conn, EDGE_DOWN_ANSWER), 1.0)
            conn.close()
    except (asyncio.CancelledError, OSError):
        pass
    finally:
        sock.close()


def _child_failure(child: Child) -> int:
    code = child.last_exit
    if code in (ExitCode.USAGE, ExitCode.DATABASE, ExitCode.PORT_IN_USE):
        return int(code)  # the child already printed the one-line reason
    raise HaltonError(f"the {child.name} process failed to start (exit code {code}); see the messages above")


def _acquire_lock(path: Path, runtime: Path) -> IO[str]:
    handle = open(path, "a+")  # noqa: SIM115 - held for the life of serve
    try:
        if sys.platform == "win32":  # lock the file's first byte (released when we exit)
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        pid = "?"
        with contextlib.suppress(Exception):
            pid = json.loads(runtime.read_text())["pid"]
        raise HaltonError(
            f"halton-meter is already running for {path.parent.parent} (pid {pid}); stop it first (Ctrl-C or kill {pid})"
        ) from None
    return handle


def _remove_runtime(path: Path) -> None:
    with contextlib.suppress(OSError):
        data = json.loads(path.read_text())
        if data.get("pid") == os.getpid():
            path.unlink()
