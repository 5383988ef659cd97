"""API key attribution without storing keys.

Each call records a short fingerprint of the credential it used: HMAC-SHA256 under a random secret that
never leaves `$HALTON_METER_HOME/fingerprint.key` (0600), truncated to 8 hex characters. Without that file
a fingerprint cannot be tested against a guessed key, and 32 bits are far too few to recover anything
from. The same key always gives the same fingerprint on this machine, so reports can group by key, and
`[keys]` in config.toml can give fingerprints names.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

FINGERPRINT_CHARS = 8
SECRET_FILE = "fingerprint.key"

# Where clients put credentials, most specific first. `authorization` covers Bearer API keys and OAuth
# access tokens (Claude Code, Gemini CLI, Codex sign-in); `?key=` is the Gemini API's query parameter.
CREDENTIAL_HEADERS = ("x-api-key", "x-goog-api-key", "api-key", "authorization")


def load_secret(home: Path, create: bool = True) -> bytes | None:
    """The fingerprint secret, created (0600) on first use. None when it does not exist and `create` is
    false, or cannot be created (then calls are simply recorded without a fingerprint)."""
    path = home / SECRET_FILE
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data[:32]
    except FileNotFoundError:
        pass
    except OSError:
        return None
    if not create:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return load_secret(home, create=False)
    except OSError:
        return None
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(32))
    return load_secret(home, create=False)


def fingerprint(secret: bytes, credential: str) -> str:
    return hmac.new(secret, credential.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:FINGERPRINT_CHARS]


def credential_of(headers: Mapping[str, str], query_key: str | None = None) -> str | None:
    """The credential a request carries: the first credential header, else the `key` query parameter.
    `Bearer ` is dropped so a key sent either way fingerprints the same."""
    for name in CREDENTIAL_HEADERS:
        value = headers.get(name)
        if value:
            value = value.strip()
            scheme, _, rest = value.partition(" ")
            if scheme.upper() == "AWS4-HMAC-SHA256":  # SigV4 signs every request anew: the key is its access key id
                access_key = sigv4_access_key(rest)
                if access_key:
                    return "aws:" + access_key
            if rest and scheme.lower() in ("bearer", "basic", "token"):
                value = rest.strip()
            if value:
                return value
    return query_key or None


def sigv4_access_key(params: str) -> str | None:
    """The access key id in a SigV4 `Authorization` header's parameters
    (`Credential=AKIA…/20261203/us-east-1/bedrock/aws4_request, SignedHeaders=…, Signature=…`): the same
    for every call made with one key, unlike the signature and the date."""
    for part in params.split(","):
        name, _, value = part.strip().partition("=")
        if name == "Credential" and value:
            return value.split("/", 1)[0] or None
    return None


def key_label(fp: str | None, names: Mapping[str, str]) -> str | None:
    """`team key (3f9a1c2e)` when config names the fingerprint (or a prefix of it), else the fingerprint."""
    if fp is None:
        return None
    for prefix, name in names.items():
        if fp.startswith(prefix):
            return f"{name} ({fp})"
    return fp
