"""A real PostgreSQL for the tests: the machine's own server binaries (`initdb`, `pg_ctl`), a fresh cluster
in a temporary directory on a free loopback port, run as an unprivileged user (`initdb` refuses root), with
a password-protected role and database. `.ci/run` installs Debian's postgresql package when it is absent;
without binaries the tests that need one are skipped, saying why."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "team-secret-7f3e"
USER = "halton"
DATABASE = "team"


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Postgres:
    bin: Path
    data: Path
    port: int
    run_as: str | None

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *args] if self.run_as else list(args)

    def pg_ctl(self, action: str) -> None:
        args = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30"]
        if action == "start":
            args += ["-l", str(self.data / "server.log"), "-o",
                     f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off"]
        args.append(action)
        if action == "stop":
            args += ["-m", "immediate"]
        subprocess.run(self._cmd(*args), check=True, capture_output=True, timeout=60)

    def sql(self, statement: str, database: str = "postgres") -> str:
        out = subprocess.run(self._cmd(str(self.bin / "psql"), "-h", str(self.data), "-p", str(self.port), "-U",
                                       "postgres", "-d", database, "-Atc", statement),
                             check=True, capture_output=True, text=True, timeout=30)
        return out.stdout.strip()


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    bin_dir = binaries()
    if bin_dir is None:
        import pytest

        pytest.skip("no PostgreSQL server binaries (initdb) on this machine; .ci/run installs them")
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
            run_as = "postgres"
        except KeyError:
            run_as = "nobody"
    base = Path(tempfile.mkdtemp(prefix="halton-pg-"))
    data = base / "data"
    if run_as:
        shutil.chown(base, user=run_as)
    base.chmod(0o755)
    server = Postgres(bin_dir, data, _free_port(), run_as)
    try:
        subprocess.run(server._cmd(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                   "-E", "UTF8", "--no-sync"), check=True, capture_output=True, timeout=120)
        # Password authentication over TCP for our role; the superuser over the socket only.
        hba = data / "pg_hba.conf"
        text = f"local all postgres trust\nhost {DATABASE} {USER} 127.0.0.1/32 scram-sha-256\n"
        subprocess.run(server._cmd("sh", "-c", f"printf '%s' '{text}' > {hba}"), check=True, timeout=10)
        server.pg_ctl("start")
        server.sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        server.sql(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        yield server
    finally:
        try:
            server.pg_ctl("stop")
        except Exception:
            pass
        shutil.rmtree(base, ignore_errors=True)


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port}")
