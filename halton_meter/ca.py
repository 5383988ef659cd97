"""Our own certificate authority, under `$HALTON_METER_HOME/ca/` (never `~/.mitmproxy`).

Directory 0700, key 0600, validity two years. The key and certificate sit in the file name mitmproxy's
cert store expects (`mitmproxy-ca.pem`), so mitmproxy signs leaf certificates with our CA without ever
generating its own. Trust files are built beside it: certifi's roots plus our CA for clients, and
certifi's roots plus `upstream.ca_bundle` for the core's upstream verification (our CA is never trusted
upstream). certifi itself is never modified.
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path
from typing import Any

import certifi

from halton_meter.errors import HaltonError
from halton_meter.paths import Paths, ensure_private_dir, write_atomic

CA_VALIDITY = datetime.timedelta(days=730)
CA_COMMON_NAME = "Halton Meter local CA"
KEY_SIZE = 2048


class CAProblem(HaltonError):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(f"{message}; fix: {fix}")
        self.fix = fix


def _create(paths: Paths) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    from mitmproxy.certs import DEFAULT_DHPARAM

    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Halton Meter"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, os.environ.get("USER", "local user")),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=1)  # tolerate a client clock a little behind
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    write_atomic(paths.ca_key_and_cert, key_pem + cert_pem, mode=0o600)
    write_atomic(paths.ca_cert, cert_pem, mode=0o644)
    write_atomic(paths.ca_dhparam, DEFAULT_DHPARAM, mode=0o644)


def _check_key_mode(path: Path) -> None:
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise CAProblem(
            f"CA key {path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it",
            f"chmod 600 {path}",
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CAProblem(f"CA key {path} belongs to another user", f"remove {path.parent} and start again")


def inspect_ca(paths: Paths) -> dict[str, Any] | None:
    """Read-only: facts about the CA, None when there is none yet, CAProblem when it must not be used."""
    if not paths.ca_key_and_cert.exists():
        return None
    from cryptography import x509

    _check_key_mode(paths.ca_key_and_cert)
    try:
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    except (OSError, ValueError):
        raise CAProblem(f"CA certificate {paths.ca_cert} is missing or unreadable",
                        f"move {paths.ca_dir} aside and run `halton-meter serve` to create a new CA") from None
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc <= now:
        raise CAProblem(f"CA certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}",
                        f"move {paths.ca_dir} aside and run `halton-meter serve` to create a new CA")
    return {
        "cert": str(paths.ca_cert),
        "subject": cert.subject.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


def ensure_ca(paths: Paths) -> Path:
    """Create the CA if absent (0700 dir, 0600 key); refuse a key others can read. Returns the cert path."""
    ensure_private_dir(paths.home)
    ensure_private_dir(paths.ca_dir)
    if not paths.ca_key_and_cert.exists():
        _create(paths)
    inspect_ca(paths)
    write_client_bundle(paths)
    return paths.ca_cert


def _bundle(parts: list[bytes]) -> bytes:
    return b"".join(p if p.endswith(b"\n") else p + b"\n" for p in parts)


def client_bundle_bytes(paths: Paths) -> bytes:
    """certifi's roots, the system's own bundle when there is one (so corporate roots installed there keep
    working for other hosts), and our CA."""
    import ssl

    parts = [Path(certifi.where()).read_bytes()]
    system = ssl.get_default_verify_paths().cafile
    if system and Path(system).is_file() and Path(system).resolve() != Path(certifi.where()).resolve():
        parts.append(Path(system).read_bytes())
    parts.append(paths.ca_cert.read_bytes())
    return _bundle(parts)


def write_client_bundle(paths: Paths) -> Path:
    """The file `run` and apps mode hand to clients (see `client_bundle_bytes`)."""
    data = client_bundle_bytes(paths)
    if not paths.client_bundle.exists() or paths.client_bundle.read_bytes() != data:
        write_atomic(paths.client_bundle, data, mode=0o644)
    return paths.client_bundle


def write_upstream_trust(paths: Paths, extra_ca_bundle: Path | None) -> Path:
    """certifi's roots plus `upstream.ca_bundle`: mitmproxy takes one file that replaces its default store."""
    parts = [Path(certifi.where()).read_bytes()]
    if extra_ca_bundle is not None:
        parts.append(extra_ca_bundle.read_bytes())
    data = _bundle(parts)
    if not paths.upstream_trust.exists() or paths.upstream_trust.read_bytes() != data:
        write_atomic(paths.upstream_trust, data, mode=0o644)
    return paths.upstream_trust
