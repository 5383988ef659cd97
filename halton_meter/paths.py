"""Where Halton Meter keeps its files. Everything lives under one home directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "HALTON_METER_HOME"


def user_home() -> Path:
    """$HOME, or the account's home from the password database when HOME is unset or empty."""
    home = os.environ.get("HOME")
    if home:
        return Path(home)
    try:
        import pwd

        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except (ImportError, KeyError):
        return Path.home()


def default_home() -> Path:
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser()
    return user_home() / ".halton-meter"


@dataclass(frozen=True)
class Paths:
    """The file layout under `$HALTON_METER_HOME` (default `~/.halton-meter`)."""

    home: Path

    @classmethod
    def from_env(cls) -> Paths:
        return cls(default_home())

    @property
    def config(self) -> Path:
        return self.home / "config.toml"

    @property
    def db(self) -> Path:
        return self.home / "db.sqlite"

    @property
    def ca_dir(self) -> Path:
        return self.home / "ca"

    @property
    def ca_cert(self) -> Path:
        """Our CA certificate alone (public); what OS trust stores import."""
        return self.ca_dir / "halton-meter-ca.pem"

    @property
    def ca_key_and_cert(self) -> Path:
        """Key plus certificate, in the file name mitmproxy's cert store expects. Mode 0600."""
        return self.ca_dir / "mitmproxy-ca.pem"

    @property
    def ca_dhparam(self) -> Path:
        return self.ca_dir / "mitmproxy-dhparam.pem"

    @property
    def client_bundle(self) -> Path:
        """certifi's roots plus our CA: what `run` points SSL_CERT_FILE and friends at."""
        return self.ca_dir / "client-bundle.pem"

    @property
    def upstream_trust(self) -> Path:
        """certifi's roots plus `upstream.ca_bundle`: what the core verifies providers against."""
        return self.ca_dir / "upstream-trust.pem"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def runtime(self) -> Path:
        """Written by `serve` once edge, core and API answer: the one source of truth for ports."""
        return self.home / "runtime.json"

    @property
    def core_state(self) -> Path:
        """Written by the core when it listens: its internal port, read by the edge."""
        return self.run_dir / "core.json"

    def worker_state(self, index: int) -> Path:
        """Written by core worker `index` (1, 2, …) when it listens, like `core_state` for the first core
        (which also owns the database): its port, pid and secret, read by the edge."""
        return self.run_dir / f"core-worker-{index}.json"

    def core_states(self, workers: int) -> list[Path]:
        """Where each of `workers` core processes publishes itself: the first core, then workers 1…N-1."""
        return [self.core_state, *(self.worker_state(i) for i in range(1, max(1, workers)))]

    @property
    def spool(self) -> Path:
        """Durable buffers: records not yet committed (`records.jsonl`) and the edge's gaps (`gaps.jsonl`)."""
        return self.home / "spool"

    @property
    def logs(self) -> Path:
        return self.home / "logs"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) as 0700; tighten an existing directory we own."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file so readers see either the old or the new content, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def writable_problem(directory: Path) -> str | None:
    """Why the meter cannot write in `directory` (its home, say), as half a sentence, or None when it can.
    Asks the file system itself: a read-only mount stops root too, whatever the mode bits say."""
    import errno
    import tempfile

    target = directory
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".halton-meter-write-test-", dir=target)
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return f"{target} is on a read-only file system"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"{target} is not writable by you"
        if exc.errno == errno.ENOSPC:
            return f"the disk holding {target} is full"
        return f"{target} cannot be written ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(name)
    return None


WRITABLE_FIX = "make it writable (remount read-write, fix its owner), or set HALTON_METER_HOME to a writable directory"
