"""The meter's own certificate authority: present and coherent, its key private, not about to expire, and
the trust bundle clients are pointed at current."""

from __future__ import annotations

import datetime
import os
import re
import stat
from collections.abc import Callable
from typing import Any

from halton_meter.plugin import Check, CheckContext, CheckResult, hookimpl

EXPIRY_WARN_DAYS = 30
_KEY_BLOCK = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.S)


def _new_ca_fix(ctx: CheckContext) -> str:
    ca_dir = ctx.paths.ca_dir
    return f"mv {ca_dir} {ca_dir}.old && halton-meter init  (creates a new CA; then restart the meter and your tools)"


def _load_cert(ctx: CheckContext) -> Any:
    from cryptography import x509

    return x509.load_pem_x509_certificate(ctx.paths.ca_cert.read_bytes())


def check_ca(ctx: CheckContext) -> CheckResult:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    paths = ctx.paths
    if not paths.ca_key_and_cert.exists() and not paths.ca_cert.exists():
        return CheckResult("fail", f"no CA in {paths.ca_dir} yet",
                           fix="halton-meter init  (or `halton-meter serve`, which creates it)")
    if not paths.ca_key_and_cert.exists():
        return CheckResult("fail", f"the CA key {paths.ca_key_and_cert} is missing (the certificate is there)",
                           fix=_new_ca_fix(ctx))
    try:
        cert = _load_cert(ctx)
    except (OSError, ValueError) as exc:
        return CheckResult("fail", f"the CA certificate {paths.ca_cert} is missing or unreadable ({exc})",
                           fix=_new_ca_fix(ctx))
    try:
        combined = paths.ca_key_and_cert.read_bytes()
        signing_certs = x509.load_pem_x509_certificates(combined)
        key_block = _KEY_BLOCK.search(combined)
        if key_block is None:
            raise ValueError("no private key block")
        key = serialization.load_pem_private_key(key_block.group(0), password=None)
    except (OSError, ValueError) as exc:
        return CheckResult("fail", f"the CA key file {paths.ca_key_and_cert} is unreadable ({exc})",
                           fix=_new_ca_fix(ctx))
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        return CheckResult("fail", f"the CA key in {paths.ca_key_and_cert} does not belong to {paths.ca_cert}: "
                           "clients would reject every certificate the meter makes", fix=_new_ca_fix(ctx))
    if not signing_certs or signing_certs[0] != cert:
        return CheckResult("fail", f"{paths.ca_key_and_cert} and {paths.ca_cert} hold different certificates",
                           fix=_new_ca_fix(ctx))
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        return CheckResult("fail", f"{paths.ca_cert} is not a CA certificate", fix=_new_ca_fix(ctx))
    details = {
        "cert": str(paths.ca_cert),
        "subject": cert.subject.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }
    names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    name = str(names[0].value) if names else cert.subject.rfc4514_string()
    return CheckResult("ok", f"{name} ({paths.ca_cert})", details=details)


def check_ca_expiry(ctx: CheckContext) -> CheckResult:
    cert = _load_cert(ctx)
    not_after = cert.not_valid_after_utc
    left = not_after - datetime.datetime.now(datetime.UTC)
    details = {"not_after": not_after.isoformat(), "days_left": left.days}
    if left.total_seconds() <= 0:
        return CheckResult("fail", f"the CA expired on {not_after:%Y-%m-%d}: every metered call fails TLS",
                           fix=_new_ca_fix(ctx), details=details)
    if left < datetime.timedelta(days=EXPIRY_WARN_DAYS):
        return CheckResult("warn", f"the CA expires on {not_after:%Y-%m-%d} ({left.days} days left)",
                           fix=_new_ca_fix(ctx), details=details)
    return CheckResult("ok", f"valid until {not_after:%Y-%m-%d} ({left.days} days left)", details=details)


def check_ca_key(ctx: CheckContext) -> CheckResult:
    key = ctx.paths.ca_key_and_cert
    st = key.stat()
    mode = stat.S_IMODE(st.st_mode)
    dir_mode = stat.S_IMODE(ctx.paths.ca_dir.stat().st_mode)
    details = {"key": str(key), "mode": f"{mode:04o}", "dir_mode": f"{dir_mode:04o}"}
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return CheckResult("fail", f"the CA key {key} belongs to another user (uid {st.st_uid})",
                           fix=_new_ca_fix(ctx), details=details)
    if mode & 0o077:
        return CheckResult("fail", f"the CA key {key} is readable by other users (mode {mode:04o}); the meter "
                           "refuses to use it", fix=f"chmod 600 {key}", details=details)
    if dir_mode & 0o077:
        return CheckResult("warn", f"{ctx.paths.ca_dir} is open to other users (mode {dir_mode:04o})",
                           fix=f"chmod 700 {ctx.paths.ca_dir}", details=details)
    return CheckResult("ok", f"key mode {mode:04o} in a {dir_mode:04o} directory", details=details)


def check_trust_bundle(ctx: CheckContext) -> CheckResult:
    from halton_meter.plugin import client_bundle_bytes

    bundle = ctx.paths.client_bundle
    fix = "halton-meter init  (rewrites the bundle; restarting the meter does too)"
    if not bundle.exists():
        return CheckResult("fail", f"no trust bundle at {bundle}: `halton-meter run` and apps mode point clients at "
                           "it", fix=fix)
    current = bundle.read_bytes()
    details = {"path": str(bundle), "bytes": len(current)}
    if current == client_bundle_bytes(ctx.paths):
        return CheckResult("ok", f"{bundle} is current (public roots plus this CA)", details=details)
    if ctx.paths.ca_cert.read_bytes().strip() not in current:
        return CheckResult("fail", f"{bundle} does not contain this CA: clients using it reject the meter's "
                           "certificates", fix=fix, details=details)
    return CheckResult("warn", f"{bundle} is out of date (the public or system roots changed since it was written)",
                       fix=fix, details=details)


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.ca", "certificate authority", check_ca, requires=("check.home",)))
    register(Check("check.ca.expiry", "CA expiry", check_ca_expiry, requires=("check.ca",), status_row="ca"))
    register(Check("check.ca.key", "CA key permissions", check_ca_key, requires=("check.ca",)))
    register(Check("check.ca.bundle", "trust bundle", check_trust_bundle, requires=("check.ca",)))
