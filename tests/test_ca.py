"""Our CA: private files, two-year validity, trust bundles that never include what they must not."""

from __future__ import annotations

import datetime
import hashlib
import stat
from pathlib import Path

import certifi
import pytest
from cryptography import x509

from halton_meter.ca import CA_COMMON_NAME, CAProblem, ensure_ca, inspect_ca, write_upstream_trust
from halton_meter.paths import Paths


def test_ca_is_created_private_and_short_lived(paths: Paths) -> None:
    certifi_before = hashlib.sha256(Path(certifi.where()).read_bytes()).hexdigest()
    cert_path = ensure_ca(paths)
    assert stat.S_IMODE(paths.home.stat().st_mode) == 0o700
    assert stat.S_IMODE(paths.ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(paths.ca_key_and_cert.stat().st_mode) == 0o600
    assert paths.ca_dir != Path.home() / ".mitmproxy"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == CA_COMMON_NAME
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=731)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The client bundle is certifi's roots plus ours; certifi itself is untouched.
    bundle = paths.client_bundle.read_bytes()
    assert bundle.startswith(Path(certifi.where()).read_bytes().rstrip(b"\n"))
    assert cert_path.read_bytes() in bundle
    assert hashlib.sha256(Path(certifi.where()).read_bytes()).hexdigest() == certifi_before


def test_ca_is_reused_not_regenerated(paths: Paths) -> None:
    first = ensure_ca(paths).read_bytes()
    assert ensure_ca(paths).read_bytes() == first


def test_a_key_others_can_read_is_refused(paths: Paths) -> None:
    ensure_ca(paths)
    paths.ca_key_and_cert.chmod(0o644)
    with pytest.raises(CAProblem) as info:
        ensure_ca(paths)
    assert "readable by other users (mode 0644); refusing to use it" in str(info.value)
    assert info.value.fix == f"chmod 600 {paths.ca_key_and_cert}"


def test_inspect_without_a_ca(paths: Paths) -> None:
    assert inspect_ca(paths) is None


def test_upstream_trust_never_contains_our_ca(paths: Paths, tmp_path: Path) -> None:
    ensure_ca(paths)
    extra = tmp_path / "corp.pem"
    extra.write_text("-----BEGIN CERTIFICATE-----\nCORP\n-----END CERTIFICATE-----\n")
    trust = write_upstream_trust(paths, extra).read_bytes()
    assert paths.ca_cert.read_bytes() not in trust
    assert b"CORP" in trust and trust.startswith(Path(certifi.where()).read_bytes().rstrip(b"\n"))
    assert paths.ca_cert.read_bytes() not in write_upstream_trust(paths, None).read_bytes()
