"""S14, offline: known security advisories for the dependencies that carry our traffic and trust.

docs/testing.md ("Security", S14) asks for `pip-audit` in CI. It cannot run from these machines: its PyPI service
reads `https://pypi.org/pypi/<name>/<version>/json`, and those per-version pages answer 404 here (only
the per-project page is served, and it lists only the newest release's advisories); its OSV service needs
`api.osv.dev`, which does not resolve. So this module keeps a small table of advisories by hand, for the
packages that parse client and provider traffic (mitmproxy, h11, h2, hpack, brotli), hold or check
trust (cryptography, certifi) or make requests (urllib3, requests, idna), plus the web stack mitmproxy
pulls in (jinja2, and tornado, which also serves the meter's loopback API). Only advisories whose fixed version was checked against the advisory
databases are listed.

Two checks per advisory:
* the installed version is outside the affected range;
* where pyproject.toml names the package, its version floor excludes the affected range.

An installed version that is still affected, for a reason recorded in `OPEN_INSTALLED` (typically a pin
in mitmproxy itself), is an expected failure that disappears once a fixed version is installed; a new
advisory or a new affected install fails until someone triages it here. Floors in pyproject.toml are in
this repository, so a floor that admits an affected version is a plain expected failure (strict).

To add an advisory: append it to ADVISORIES with the first fixed version and the ids; keep the
`introduced` version when the advisory gives one.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@dataclass(frozen=True)
class Advisory:
    package: str
    id: str  # GHSA-…, or PYSEC-… when there is no GHSA
    cve: str | None
    fixed: str  # first version that is not affected
    what: str
    introduced: str = "0"

    def affects(self, version: str) -> bool:
        return Version(self.introduced) <= Version(version) < Version(self.fixed)


ADVISORIES: tuple[Advisory, ...] = (
    # mitmproxy: the core parses every metered request and response.
    Advisory("mitmproxy", "GHSA-22gh-3r9q-xf38", "CVE-2021-39214", "7.0.3", "HTTP/1 request smuggling"),
    Advisory("mitmproxy", "GHSA-gcx2-gvj7-pxv3", "CVE-2022-24766", "8.0.0", "HTTP/1 request smuggling"),
    Advisory("mitmproxy", "GHSA-wg33-5h85-7q5p", "CVE-2025-23217", "11.1.2",
             "mitmweb's API reachable through the proxy port (SSRF)"),
    Advisory("mitmproxy", "GHSA-847f-9342-265h", "CVE-2025-57804", "12.1.2",
             "HTTP/2 -> HTTP/1 request smuggling (via hyper-h2)"),
    Advisory("mitmproxy", "GHSA-527g-3w9m-29hv", "CVE-2026-40606", "12.2.2",
             "LDAP injection in proxyauth (mode unused by Halton Meter)"),
    # HTTP/1 and HTTP/2 parsers.
    Advisory("h11", "GHSA-vqfr-h8mv-ghfj", "CVE-2025-43859", "0.16.0",
             "lenient chunked-body line terminators: request smuggling"),
    Advisory("h2", "GHSA-847f-9342-265h", "CVE-2025-57804", "4.3.0",
             "CRLF in header names/values: request splitting on HTTP/2 -> HTTP/1 downgrade"),
    Advisory("hpack", "GHSA-8v8h-hg4w-mvq2", "CVE-2026-59980", "4.2.0",
             "unbounded variable-length integers: quadratic decoding"),
    # Decompression of provider bodies.
    Advisory("brotli", "PYSEC-2020-29", "CVE-2020-8927", "1.0.8", "buffer overflow in one-shot decompression"),
    Advisory("brotli", "GHSA-2qfp-q593-8484", "CVE-2025-6176", "1.2.0",
             "no output limit: decompression bombs (the streaming limit arrived in 1.2.0)"),
    Advisory("brotli", "PYSEC-2026-4322", "CVE-2026-111497", "1.2.1",
             "out-of-bounds write in the decoder on a crafted stream", introduced="1.0.3"),
    # Trust: our CA is built with cryptography; certifi is the upstream trust store.
    Advisory("cryptography", "GHSA-jfhm-5ghh-2f97", "CVE-2023-49083", "41.0.6", "NULL dereference loading PKCS#7"),
    Advisory("cryptography", "GHSA-3ww4-gg4f-jr7f", "CVE-2023-50782", "42.0.0", "Bleichenbacher timing oracle (RSA)"),
    Advisory("cryptography", "GHSA-6vqw-3v5j-54x4", "CVE-2024-26130", "42.0.4", "NULL dereference in PKCS#12"),
    Advisory("cryptography", "GHSA-79v4-65xg-pq4g", "CVE-2024-12797", "44.0.1",
             "vulnerable OpenSSL in the wheels (RPK authentication)", introduced="42.0.0"),
    Advisory("cryptography", "GHSA-g6cj-pr64-35w5", "CVE-2026-69247", "50.0.0",
             "PKCS#7 EnvelopedData decryption: Bleichenbacher oracle", introduced="44.0.0"),
    Advisory("certifi", "GHSA-43fp-rhv2-5gv8", "CVE-2022-23491", "2022.12.7", "TrustCor roots still trusted"),
    Advisory("certifi", "GHSA-xqr8-7jwr-rhp7", "CVE-2023-37920", "2023.7.22", "e-Tugra roots still trusted"),
    Advisory("certifi", "GHSA-248v-346w-9cwc", "CVE-2024-39689", "2024.7.4", "GLOBALTRUST roots still trusted"),
    # HTTP clients (the SDKs and test clients), if installed.
    Advisory("urllib3", "GHSA-34jh-p97f-mpxf", "CVE-2024-37891", "2.2.2",
             "Proxy-Authorization kept on cross-origin redirects", introduced="2.0.0"),
    Advisory("urllib3", "GHSA-pq67-6m6q-mj2v", "CVE-2025-50181", "2.5.0", "redirects not disabled by PoolManager retries"),
    Advisory("urllib3", "GHSA-gm62-xv2j-4w53", "CVE-2025-66418", "2.6.0", "unbounded Content-Encoding chain"),
    Advisory("urllib3", "GHSA-2xpw-w6gg-jr37", "CVE-2025-66471", "2.6.0", "streaming decompression bomb"),
    Advisory("urllib3", "GHSA-38jv-5279-wg99", "CVE-2026-21441", "2.6.3", "decompression bomb on redirects"),
    Advisory("requests", "GHSA-j8r2-6x86-q33q", "CVE-2023-32681", "2.31.0", "Proxy-Authorization leaked on redirects"),
    Advisory("requests", "GHSA-9wx4-h78v-vm56", "CVE-2024-35195", "2.32.0", "verify=False sticks to the connection pool"),
    Advisory("requests", "GHSA-9hjg-9r4m-mvj7", "CVE-2024-47081", "2.32.4", ".netrc credentials leaked"),
    Advisory("idna", "GHSA-jjg7-2v4v-x38h", "CVE-2024-3651", "3.7", "quadratic time on crafted input"),
    # mitmproxy's web stack, installed with it: tornado serves the loopback API and the dashboard
    # (serve/api.py); jinja2 is mitmweb's, not used by the meter.
    Advisory("tornado", "GHSA-7cx3-6m66-7c5m", "CVE-2025-47287", "6.5.0", "multipart parsing: excessive logging DoS"),
    Advisory("jinja2", "GHSA-cpwx-vrp4-4pq7", "CVE-2025-27516", "3.1.6", "sandbox escape through |attr"),
)

OPEN_INSTALLED: dict[str, str] = {}
"""Advisories still affecting what is installed, with why. Applied only while the installed version is
affected (see the module docstring)."""

OPEN_FLOORS: dict[str, str] = {}
"""Advisories whose affected range pyproject.toml's floor still admits: bugs in this repository."""


def installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pyproject_requirements() -> dict[str, Requirement]:
    data = tomllib.loads(PYPROJECT.read_text())
    project = data["project"]
    texts = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        texts += extra
    requirements = {}
    for text in texts:
        requirement = Requirement(text)
        requirements[canonicalize_name(requirement.name)] = requirement
    return requirements


def floor_admits(requirement: Requirement, advisory: Advisory) -> bool:
    """Whether the requirement's range reaches into [introduced, fixed)."""
    lower: Version | None = None
    upper: Version | None = None
    for spec in requirement.specifier:
        version = Version(spec.version.replace(".*", ""))
        if spec.operator in (">=", ">", "~=", "==", "==="):
            lower = version if lower is None else max(lower, version)
        if spec.operator in ("<", "<=", "==", "==="):
            upper = version if upper is None else min(upper, version)
    fixed, introduced = Version(advisory.fixed), Version(advisory.introduced)
    reaches_below_fix = lower is None or lower < fixed
    reaches_above_introduction = upper is None or upper > introduced
    return reaches_below_fix and reaches_above_introduction


def _installed_params() -> list[object]:
    params = []
    for advisory in ADVISORIES:
        version = installed(advisory.package)
        marks = []
        if advisory.id in OPEN_INSTALLED and version is not None and advisory.affects(version):
            marks.append(pytest.mark.xfail(strict=True, reason=f"BUG: {advisory.package} {version} is affected by "
                                                               f"{advisory.id}: {OPEN_INSTALLED[advisory.id]}"))
        params.append(pytest.param(advisory, id=f"{advisory.package}-{advisory.id}", marks=marks))
    return params


def _floor_params() -> list[object]:
    requirements = _pyproject_requirements()
    params = []
    for advisory in ADVISORIES:
        if canonicalize_name(advisory.package) not in requirements:
            continue
        marks = []
        if advisory.id in OPEN_FLOORS:
            marks.append(pytest.mark.xfail(strict=True, reason=f"BUG: {OPEN_FLOORS[advisory.id]}"))
        params.append(pytest.param(advisory, id=f"{advisory.package}-{advisory.id}", marks=marks))
    return params


def test_the_table_is_well_formed() -> None:
    seen = set()
    for advisory in ADVISORIES:
        assert re.fullmatch(r"GHSA(-[23456789cfghjmpqrvwx]{4}){3}|PYSEC-\d{4}-\d+", advisory.id), advisory.id
        assert advisory.cve is None or re.fullmatch(r"CVE-\d{4}-\d{4,}", advisory.cve), advisory.cve
        assert Version(advisory.introduced) < Version(advisory.fixed), advisory
        assert (advisory.package, advisory.id) not in seen, advisory
        seen.add((advisory.package, advisory.id))
    assert set(OPEN_INSTALLED) <= {a.id for a in ADVISORIES}
    assert set(OPEN_FLOORS) <= {a.id for a in ADVISORIES}
    # The packages the reliability contract names are all covered.
    assert {"mitmproxy", "h11", "h2", "cryptography", "certifi"} <= {a.package for a in ADVISORIES}


def test_the_request_smuggling_fixes_the_contract_names_are_installed() -> None:
    """RELIABILITY S14 by name: mitmproxy with the 11.1.2 and 12.1.2 fixes, h11 >= 0.16.0."""
    assert Version(installed("mitmproxy") or "0") >= Version("12.1.2")
    assert Version(installed("h11") or "0") >= Version("0.16.0")
    assert Version(installed("h2") or "0") >= Version("4.3.0")


@pytest.mark.parametrize("advisory", _installed_params())
def test_the_installed_version_is_not_affected(advisory: Advisory) -> None:
    version = installed(advisory.package)
    if version is None:
        pytest.skip(f"{advisory.package} is not installed")
    assert not advisory.affects(version), (
        f"{advisory.package} {version} is affected by {advisory.id} ({advisory.cve}): {advisory.what}; "
        f"install {advisory.package}>={advisory.fixed}")


@pytest.mark.parametrize("advisory", _floor_params())
def test_pyproject_floors_exclude_the_affected_versions(advisory: Advisory) -> None:
    requirement = _pyproject_requirements()[canonicalize_name(advisory.package)]
    assert not floor_admits(requirement, advisory), (
        f"pyproject.toml's {requirement} admits {advisory.package} versions affected by {advisory.id} "
        f"({advisory.what}); raise the floor to >={advisory.fixed}")


def test_floor_admits_reads_ranges_the_way_pip_does() -> None:
    advisory = Advisory("x", "GHSA-2222-3333-4444", None, "2.0", "t", introduced="1.5")
    assert floor_admits(Requirement("x>=1.0"), advisory)
    assert floor_admits(Requirement("x>=1.9,<3"), advisory)
    assert not floor_admits(Requirement("x>=2.0"), advisory)
    assert not floor_admits(Requirement("x>=1.0,<1.5"), advisory)  # entirely below the introduction
    assert not floor_admits(Requirement("x==2.1"), advisory)
    assert floor_admits(Requirement("x"), advisory)
