"""Security checks of the reliability contract (docs/testing.md, "Security"), against a real `halton-meter serve`.

One meter serves the whole module. Before it starts, the test builds what it needs around it: the fake
provider (its CA in `upstream.ca_bundle`), two rogue "provider" servers for S11 (one with a self-signed
certificate, one with a certificate signed by the meter's *own* CA, which must never be trusted upstream),
a plain-HTTP origin, and `upstream.resolve` rules so that non-provider names (`tunnel.test`,
`api.anthropic.com.evil.example`, `evilapi.anthropic.com`, the IP literal `127.0.0.2`) all land on the
fake. Everything listens on 127.0.0.1; nothing leaves the machine.

Every credential or prompt sent contains `CANARY`. The last test of this module stops the meter and
searches its home (database, WAL, spool, logs, CA dir) and its output for them; the session-end search in
tests/conftest.py does the same again for every meter of the session.

Covered elsewhere, on purpose not repeated here:
* CA created 0700/0600, reused, a readable key refused, our CA never in the upstream trust:
  tests/test_ca.py (in-process); here the same facts are checked on a running meter (S2).
* API defences on an in-process `Api` object: tests/test_edge_api.py (`test_foreign_host_headers_are_rejected`,
  `test_cors_preflight_gets_no_allow_headers`, `test_everything_but_health_needs_the_token`), and all of them
  with the caps, the exports, the live tail and the dashboard's login in tests/test_api_server.py and
  tests/test_dashboard_auth.py; here against the real API of a running meter with more variants (S4–S6).
* Edge refusals on an in-process `Edge`: tests/test_edge_api.py
  (`test_refusals_answer_with_a_status_and_the_edge_keeps_serving`); here through the real edge (S7).
* Non-provider CONNECT keeps the origin's certificate: tests/test_e2e.py
  (`test_non_provider_host_is_tunnelled_with_its_own_certificate`); here the other S10 variants.
* Opt-in body capture with redaction (the other half of S9): tests/test_capture.py.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from halton_meter.ca import CA_COMMON_NAME, ensure_ca
from halton_meter.paths import Paths
from halton_meter.serve.api import read_token
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import PROVIDER_HOSTS, FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess, write_config

CANARY_KEY = "sk-ant-api03-CANARYKEY-security-x-api-key"
CANARY_BEARER = "sk-proj-CANARYKEY-security-bearer"
CANARY_GOOG = "AIzaCANARYKEY-security-goog-header"
CANARY_QUERY = "AIzaCANARYKEY-security-query"
CANARY_PROMPT = f"PROMPT-CANARY-{uuid.uuid4()}"
CANARY_ANSWER = f"ANSWER-CANARY-{uuid.uuid4()}"

TUNNEL_HOSTS = ("tunnel.test", "api.anthropic.com.evil.example", "evilapi.anthropic.com")
IP_LITERAL = "127.0.0.2"
"""An IP-literal CONNECT target. `upstream.resolve` names it, which is the one way the edge allows a
loopback target: it then lands on the fake. Without the rule it would be refused (loopback), never sent
off the machine."""
SELF_SIGNED_HOST = "api.x.ai"  # a provider host (claimed by the xAI provider) answered by a self-signed cert
OWN_CA_HOST = "api.groq.com"  # a provider host answered by a cert signed by the meter's own CA
PLAIN_HOST = "plain.test"


# --------------------------------------------------------------------------------------------------
# Rogue upstream servers (S11)
# --------------------------------------------------------------------------------------------------


def _leaf(host: str, issuer_key=None, issuer_cert: x509.Certificate | None = None) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) for `host`: self-signed, or signed by the given issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    cert = builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class RogueTLSServer:
    """A TLS server on 127.0.0.1 that answers any request with 200 and counts connections, completed
    handshakes and requests.

    It stands in for a provider reached through a hostile network: the meter must refuse its certificate,
    so `requests` must stay 0 (nothing, not even the request line with its credentials, reaches it)."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, workdir: Path) -> None:
        cert_file, key_file = workdir / f"rogue-{uuid.uuid4().hex}.pem", workdir / f"rogue-{uuid.uuid4().hex}.key"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert_file), str(key_file))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.handshakes = 0
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                self.requests.append(head)
                body = b'{"rogue": true}'
                tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                            b"connection: close\r\n\r\n%s" % (len(body), body))
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


# --------------------------------------------------------------------------------------------------
# The module's meter
# --------------------------------------------------------------------------------------------------


class Setup:
    def __init__(self, meter: MeterProcess, fake: FakeProvider, plain: FakeProvider,
                 self_signed: RogueTLSServer, own_ca: RogueTLSServer) -> None:
        self.meter, self.fake, self.plain = meter, fake, plain
        self.self_signed, self.own_ca = self_signed, own_ca


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("security")
    home = root / "home"
    paths = Paths(home)
    # Create the meter's CA first, so a rogue server can present a certificate signed by it.
    ensure_ca(paths)
    pem = paths.ca_key_and_cert.read_bytes()
    ca_key = serialization.load_pem_private_key(pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    workdir = Path(tempfile.mkdtemp(prefix="rogue-", dir=root))
    self_signed = RogueTLSServer(*_leaf(SELF_SIGNED_HOST), workdir)
    own_ca = RogueTLSServer(*_leaf(OWN_CA_HOST, ca_key, ca_cert), workdir)
    with FakeProvider(extra_hosts=(*TUNNEL_HOSTS, IP_LITERAL)) as fake, FakeProvider(tls=False) as plain:
        rogue = {SELF_SIGNED_HOST, OWN_CA_HOST}
        rules = fake.resolve_rules([h for h in PROVIDER_HOSTS if h not in rogue])
        rules += [f"{h}:443:127.0.0.1:{fake.port}" for h in (*TUNNEL_HOSTS, IP_LITERAL)]
        rules += [f"{SELF_SIGNED_HOST}:443:127.0.0.1:{self_signed.port}", f"{OWN_CA_HOST}:443:127.0.0.1:{own_ca.port}",
                  f"{PLAIN_HOST}:80:127.0.0.1:{plain.port}"]
        write_config(home, ca_bundle=fake.ca_pem, resolve=rules)
        # Logs to files (as under a service manager), at the most talkative level, inside the meter's home so
        # the final search sees them.
        env = {"HALTON_METER_LOG_DIR": str(paths.logs), "HALTON_METER_LOG_LEVEL": "DEBUG"}
        meter = MeterProcess.start(home, None, env=env)
        try:
            yield Setup(meter, fake, plain, self_signed, own_ca)
        finally:
            meter.stop()
            self_signed.close()
            own_ca.close()
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_fakes(request: pytest.FixtureRequest) -> None:
    if "sec" in request.fixturenames:
        setup: Setup = request.getfixturevalue("sec")
        setup.fake.clear()
        setup.plain.clear()


def exchange(port: int, payload: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send raw bytes to 127.0.0.1:port; return the answer's head (or all until close) and the seconds taken."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(payload)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 1 << 20:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            if b"\r\n\r\n" in data and not data.startswith(b"HTTP/1.1 200 Connection"):
                sock.settimeout(1)
                while len(data) < 1 << 20 and (chunk := sock.recv(65536)):
                    data += chunk
        except (TimeoutError, ConnectionError):
            pass
        return data, time.monotonic() - started


def status_of(reply: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    return int(match.group(1)) if match else None


def tunnel(port: int, target: str) -> socket.socket:
    """A socket through the edge after a successful CONNECT to `target`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"edge closed the CONNECT to {target}: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def issuer_cn(der: bytes) -> str:
    names = x509.load_der_x509_certificate(der).issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def no_new_rows(meter: MeterProcess, before: int, gaps_before: int) -> None:
    time.sleep(0.5)  # a record (if one were made) lands well within this
    assert len(meter.rows(include_in_progress=True)) == before
    assert gap_count(meter) == gaps_before


def gap_count(meter: MeterProcess) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{meter.home / 'db.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM gaps").fetchone()[0])
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------
# S1: loopback-only listeners
# --------------------------------------------------------------------------------------------------


def _meter_pids(meter: MeterProcess) -> set[int]:
    import psutil

    parent = psutil.Process(meter.proc.pid)
    return {parent.pid, *(child.pid for child in parent.children(recursive=True))}


@pytest.mark.e2e
def test_s1_every_listener_of_the_meter_is_on_loopback(sec: Setup) -> None:
    meter = sec.meter
    pids = _meter_pids(meter)
    assert len(pids) >= 3  # serve, core, edge
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=10, check=True).stdout
    ours = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            ours.append(line.split()[3])  # Local Address:Port
    core_port = json.loads((meter.home / "run" / "core.json").read_text())["port"]
    expected_ports = {meter.edge_port, meter.api_port, core_port}
    assert {int(addr.rsplit(":", 1)[1]) for addr in ours} >= expected_ports, out
    for addr in ours:
        host = addr.rsplit(":", 1)[0].strip("[]")
        assert host in ("127.0.0.1", "::1"), f"a meter process listens on {addr}:\n{out}"


# --------------------------------------------------------------------------------------------------
# S2: the CA and the other private files
# --------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_s2_ca_key_is_private_in_our_own_dir_and_short_lived(sec: Setup) -> None:
    paths = Paths(sec.meter.home)
    ca_dir = paths.ca_dir
    assert ca_dir.resolve() != (Path.home() / ".mitmproxy").resolve()
    assert ca_dir.parent == sec.meter.home
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    key = paths.ca_key_and_cert
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_uid == os.getuid()
    # mitmproxy used our CA: it generated none of its own files in its confdir.
    assert {p.name for p in ca_dir.iterdir()} <= {
        "mitmproxy-ca.pem", "halton-meter-ca.pem", "mitmproxy-dhparam.pem", "client-bundle.pem", "upstream-trust.pem"}
    for path in ca_dir.iterdir():  # only the key file holds a private key
        assert (b"PRIVATE KEY" in path.read_bytes()) == (path == key), path
    cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= datetime.timedelta(days=731)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CA_COMMON_NAME
    # Whatever else carries secrets or traffic data is private too (DESIGN: 0700 dirs, 0600 files).
    assert stat.S_IMODE(sec.meter.home.stat().st_mode) == 0o700
    for name in ("api-token", "db.sqlite", "runtime.json"):
        assert stat.S_IMODE((sec.meter.home / name).stat().st_mode) == 0o600, name


# --------------------------------------------------------------------------------------------------
# S4–S6: the loopback API
# --------------------------------------------------------------------------------------------------


def api_raw(meter: MeterProcess, request: str) -> tuple[int | None, dict[str, str], bytes]:
    reply, _ = exchange(meter.api_port, request.replace("PORT", str(meter.api_port)).encode())
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status_of(reply), headers, body


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/v1/stats", "/v1/calls?limit=5", "/v1/report?since=1d", "/v1/projects", "/",
                                  "/health/../v1/stats", "/v1/stats?token=x"])
def test_s4_everything_but_health_needs_the_token(sec: Setup, path: str) -> None:
    # (tests/test_e2e.py::test_api_needs_its_token_and_a_loopback_host checks /v1/stats with and without it.)
    meter = sec.meter
    for authorization in (None, "Bearer " + "x" * 43, "Bearer ", f"Basic {read_token(Paths(meter.home))}",
                          f"bearer{read_token(Paths(meter.home))}"):
        auth = f"Authorization: {authorization}\r\n" if authorization is not None else ""
        status, headers, body = api_raw(meter, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\n{auth}\r\n")
        assert status == 401, (authorization, body)
        assert headers["www-authenticate"].startswith("Bearer")
        assert b"version" not in body and b"committed" not in body


@pytest.mark.e2e
def test_s4_health_is_open_and_says_only_ok_and_the_version(sec: Setup) -> None:
    status, headers, body = api_raw(sec.meter, "GET /health HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\n\r\n")
    assert status == 200 and set(json.loads(body)) == {"status", "version"}
    assert json.loads(body)["status"] == "ok"
    assert api_raw(sec.meter, "POST /health HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\ncontent-length: 0\r\n\r\n")[0] == 405
    # With the token, the other endpoints answer (so the 401s above are about the token, nothing else).
    assert sec.meter.api_get("/v1/stats").status_code == 200


@pytest.mark.e2e
@pytest.mark.parametrize("host", ["evil.example:PORT", "127.0.0.1.evil.example:PORT", "localhost.evil.example:PORT",
                                  "127.0.0.1", "localhost", "127.0.0.1:1", "[::1]:1", "evil.example", ""])
def test_s5_dns_rebinding_with_the_right_token_gets_421(sec: Setup, host: str) -> None:
    token = read_token(Paths(sec.meter.home))
    host_line = f"Host: {host}\r\n" if host else ""
    for path in ("/v1/stats", "/health"):
        status, _, _ = api_raw(sec.meter, f"GET {path} HTTP/1.1\r\n{host_line}Authorization: Bearer {token}\r\n\r\n")
        assert status == 421, (host, path)
    # The same request with a loopback Host is served.
    ok, _, _ = api_raw(sec.meter, f"GET /v1/stats HTTP/1.1\r\nHost: localhost:PORT\r\nAuthorization: Bearer {token}\r\n\r\n")
    assert ok == 200


@pytest.mark.e2e
@pytest.mark.parametrize("method_path", ["OPTIONS /v1/stats", "OPTIONS /health", "GET /health", "GET /v1/stats"])
def test_s6_cross_origin_requests_get_no_cors_or_private_network_headers(sec: Setup, method_path: str) -> None:
    token = read_token(Paths(sec.meter.home))
    status, headers, _ = api_raw(
        sec.meter,
        f"{method_path} HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nOrigin: https://evil.example\r\n"
        "Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n"
        f"Access-Control-Request-Private-Network: true\r\nAuthorization: Bearer {token}\r\n\r\n",
    )
    assert status in (200, 405)
    assert not [h for h in headers if h.startswith("access-control-")], headers


# --------------------------------------------------------------------------------------------------
# S7: the edge is no pivot to local services
# --------------------------------------------------------------------------------------------------


def _loopback_alias() -> str | None:
    """A name (not in the edge's static list) that resolves to loopback here, so the DNS check is exercised."""
    for name in (socket.gethostname(), "runsc"):
        try:
            infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
        except OSError:
            continue
        if infos and all(info[4][0].startswith("127.") or info[4][0] == "::1" for info in infos):
            return name
    return None


def _pivots(meter: MeterProcess) -> list[bytes]:
    core_port = json.loads((meter.home / "run" / "core.json").read_text())["port"]
    api, edge = meter.api_port, meter.edge_port
    probes = [
        f"CONNECT 127.0.0.1:{api} HTTP/1.1\r\nHost: 127.0.0.1:{api}\r\n\r\n",
        f"CONNECT 127.0.0.1:{edge} HTTP/1.1\r\n\r\n",  # the edge itself
        f"CONNECT 127.0.0.1:{core_port} HTTP/1.1\r\n\r\n",  # the core, directly
        f"GET http://127.0.0.1:{api}/v1/stats HTTP/1.1\r\nHost: 127.0.0.1:{api}\r\n\r\n",
        f"GET http://localhost:{api}/health HTTP/1.1\r\nHost: localhost:{api}\r\n\r\n",
        "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n",
        "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
        f"CONNECT localhost:{api} HTTP/1.1\r\n\r\n",
        f"CONNECT LOCALHOST.:{api} HTTP/1.1\r\n\r\n",
        f"CONNECT [::1]:{api} HTTP/1.1\r\n\r\n",
        f"CONNECT 127.1:{api} HTTP/1.1\r\n\r\n",  # resolves to 127.0.0.1
        f"CONNECT 2130706433:{api} HTTP/1.1\r\n\r\n",  # decimal 127.0.0.1
        f"CONNECT 0.0.0.0:{api} HTTP/1.1\r\n\r\n",
        f"CONNECT [::]:{api} HTTP/1.1\r\n\r\n",
    ]
    alias = _loopback_alias()
    if alias:
        probes.append(f"CONNECT {alias}:{api} HTTP/1.1\r\n\r\n")
    return [p.encode() for p in probes]


@pytest.mark.e2e
def test_s7_proxy_pivots_to_local_services_and_metadata_get_403(sec: Setup) -> None:
    meter = sec.meter
    for probe in _pivots(meter):
        reply, took = exchange(meter.edge_port, probe)
        assert status_of(reply) == 403, (probe, reply[:200])
        assert b"halton-meter edge: refusing" in reply and took < 1.0, probe
    # and the edge still serves ordinary traffic
    tunnel(meter.edge_port, "tunnel.test:443").close()


@pytest.mark.e2e
@pytest.mark.parametrize("form", ["connect", "absolute"])
def test_s7_ipv4_mapped_ipv6_loopback_is_refused_too(sec: Setup, form: str) -> None:
    meter, api = sec.meter, sec.meter.api_port
    if form == "connect":
        probe = f"CONNECT [::ffff:127.0.0.1]:{api} HTTP/1.1\r\n\r\n".encode()
    else:
        probe = f"GET http://[::ffff:127.0.0.1]:{api}/health HTTP/1.1\r\nHost: 127.0.0.1:{api}\r\n\r\n".encode()
    reply, _ = exchange(meter.edge_port, probe)
    assert status_of(reply) == 403, reply[:200]


# --------------------------------------------------------------------------------------------------
# S8, S9: metered calls carrying canary credentials and prompts (the search is the module's last test)
# --------------------------------------------------------------------------------------------------


GEMINI_BODY = json.dumps({
    "candidates": [{"content": {"role": "model", "parts": [{"text": CANARY_ANSWER}]}, "finishReason": "STOP"}],
    "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10},
    "modelVersion": "gemini-2.0-flash",
}).encode()


@pytest.mark.e2e
def test_s8_s9_calls_with_canary_keys_and_prompts_are_metered(sec: Setup) -> None:
    fake, meter = sec.fake, sec.meter
    fake.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=11, output_tokens=3,
                                                                          text=CANARY_ANSWER)))
    fake.add("POST", "/v1/chat/completions", Reply(body=bodies.openai_chat(prompt_tokens=13, completion_tokens=2,
                                                                            text=CANARY_ANSWER)))
    fake.add("POST", "/v1beta/models/gemini-2.0-flash:generateContent", Reply(body=GEMINI_BODY))
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    prompt = {"role": "user", "content": CANARY_PROMPT}
    with meter.client(extra_ca=fake.ca_pem, timeout=20) as client:
        responses = [
            client.post("https://api.anthropic.com/v1/messages",
                        headers={"x-api-key": CANARY_KEY, "anthropic-version": "2023-06-01"},
                        json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [prompt]}),
            client.post("https://api.openai.com/v1/chat/completions",
                        headers={"authorization": f"Bearer {CANARY_BEARER}"},
                        json={"model": "gpt-4o", "messages": [prompt]}),
            client.post(f"https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
                        f"?key={CANARY_QUERY}", headers={"x-goog-api-key": CANARY_GOOG},
                        json={"contents": [{"role": "user", "parts": [{"text": CANARY_PROMPT}]}]}),
        ]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(CANARY_ANSWER in r.text for r in responses)  # the client gets every byte
    # The provider got the credentials (the meter forwards them untouched) ...
    received = {r.host: r for r in fake.requests}
    assert received["api.anthropic.com"].header("x-api-key") == CANARY_KEY
    assert received["api.openai.com"].header("authorization") == f"Bearer {CANARY_BEARER}"
    assert received["generativelanguage.googleapis.com"].query == f"key={CANARY_QUERY}"
    deadline = time.monotonic() + 10
    rows: list[dict] = []
    while time.monotonic() < deadline and len(rows) < 3:
        rows = [r for r in meter.rows() if r["started_at"] >= started]
        time.sleep(0.05)
    assert sorted(r["provider"] for r in rows) == ["anthropic", "gemini", "openai"]
    # ... and the rows keep the counts, with the query secret redacted.
    gemini = next(r for r in rows if r["provider"] == "gemini")
    assert CANARY_QUERY not in gemini["path"] and "key=" in gemini["path"]
    assert (gemini["input_tokens"], gemini["output_tokens"]) == (7, 3)


# --------------------------------------------------------------------------------------------------
# S10: traffic that is not an LLM call is not touched
# --------------------------------------------------------------------------------------------------


def _fake_only_context(check_hostname: bool = True) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = check_hostname
    return context


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("connect_to", "sni"),
    [
        ("api.anthropic.com.evil.example:443", "api.anthropic.com.evil.example"),
        ("evilapi.anthropic.com:443", "evilapi.anthropic.com"),
        (f"{IP_LITERAL}:443", None),  # IP-literal CONNECT, no SNI
        ("tunnel.test:443", "api.anthropic.com"),  # SNI names a provider, the CONNECT does not
    ],
)
def test_s10_non_provider_tunnels_keep_the_origin_certificate_and_make_no_row(sec: Setup, connect_to, sni) -> None:
    meter, fake = sec.meter, sec.fake
    fake.add("GET", "/hello", Reply(body=b'{"hello": "origin"}'))
    before, gaps_before = len(meter.rows(include_in_progress=True)), gap_count(meter)
    context = _fake_only_context(check_hostname=sni is not None)
    fake.ca.configure_trust(context)  # only the origin's CA: a certificate from ours would fail here
    with tunnel(meter.edge_port, connect_to) as raw, context.wrap_socket(raw, server_hostname=sni) as tls:
        assert issuer_cn(tls.getpeercert(binary_form=True)) != CA_COMMON_NAME
        host = sni or IP_LITERAL
        tls.sendall(f"GET /hello HTTP/1.1\r\nHost: {host}\r\nx-api-key: {CANARY_KEY}\r\nconnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"hello": "origin"}')
    [seen] = fake.requests
    assert seen.tls_sni == sni and seen.header("x-api-key") == CANARY_KEY  # nothing stripped or added
    assert not [name for name, _ in seen.headers if name.startswith("x-halton")]
    no_new_rows(meter, before, gaps_before)


@pytest.mark.e2e
def test_s10_a_provider_host_is_intercepted_but_its_lookalikes_are_not(sec: Setup) -> None:
    """The control for the test above: the real provider name does get our certificate."""
    context = ssl.create_default_context(cafile=sec.meter.runtime["ca_cert"])
    with tunnel(sec.meter.edge_port, "api.anthropic.com:443") as raw, \
            context.wrap_socket(raw, server_hostname="api.anthropic.com") as tls:
        assert issuer_cn(tls.getpeercert(binary_form=True)) == CA_COMMON_NAME
    for lookalike in ("api.anthropic.com.evil.example", "evilapi.anthropic.com"):
        with tunnel(sec.meter.edge_port, f"{lookalike}:443") as raw, pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname=lookalike)


@pytest.mark.e2e
def test_s10_plain_http_to_another_host_is_forwarded_untouched_with_no_row(sec: Setup) -> None:
    meter, plain = sec.meter, sec.plain
    plain.add("POST", "/form", Reply(body=b'{"plain": "origin"}'))
    before, gaps_before = len(meter.rows(include_in_progress=True)), gap_count(meter)
    with httpx.Client(proxy=meter.proxy_url, trust_env=False, timeout=10) as client:
        response = client.post(f"http://{PLAIN_HOST}/form?key={CANARY_QUERY}", headers={"x-api-key": CANARY_KEY},
                               content=CANARY_PROMPT.encode())
    assert response.status_code == 200 and response.json() == {"plain": "origin"}
    [seen] = plain.requests
    assert (seen.path, seen.query, seen.body) == ("/form", f"key={CANARY_QUERY}", CANARY_PROMPT.encode())
    assert seen.header("x-api-key") == CANARY_KEY and seen.host == PLAIN_HOST
    no_new_rows(meter, before, gaps_before)


# --------------------------------------------------------------------------------------------------
# S11: upstream verification is honest
# --------------------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("host", [SELF_SIGNED_HOST, OWN_CA_HOST])
def test_s11_a_provider_with_an_untrusted_certificate_fails_clearly(sec: Setup, host: str) -> None:
    rogue = sec.self_signed if host == SELF_SIGNED_HOST else sec.own_ca
    with sec.meter.client(timeout=20) as client:
        try:
            response = client.post(f"https://{host}/v1/chat/completions", headers={"authorization": f"Bearer {CANARY_BEARER}"},
                                   json={"model": "m", "messages": [{"role": "user", "content": CANARY_PROMPT}]})
        except httpx.HTTPError as exc:  # a failed connection is a clear failure too
            failure = f"{type(exc).__name__}: {exc}"
        else:
            assert response.status_code >= 500, response.text
            failure = response.text
    assert re.search(r"certificate|verif|tls|ssl", failure, re.IGNORECASE), failure
    assert rogue.accepted >= 1  # the meter did reach the rogue server ...
    assert rogue.handshakes == 0 and rogue.requests == []  # ... and never completed TLS, nor sent the request


# --------------------------------------------------------------------------------------------------
# S13: logs are private and bounded
# --------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_s13_each_process_writes_a_private_log_file(sec: Setup) -> None:
    logs = Paths(sec.meter.home).logs
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    files = {p.name: p for p in logs.iterdir()}
    assert {"serve.log", "core.log", "edge.log"} <= set(files), files
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "core listening" in files["core.log"].read_text()


def test_s13_log_files_rotate_by_size_and_stay_private(tmp_path: Path) -> None:
    """The real `configure_logging` in a child process, with the size limit lowered so rotation happens fast."""
    log_dir = tmp_path / "logs"
    code = (
        "import halton_meter.logs as logs, structlog, logging\n"
        "logs.MAX_BYTES = 4096\n"
        "logs.configure_logging('core')\n"
        "log = structlog.get_logger('halton_meter.test')\n"
        "for i in range(400):\n"
        "    log.info('filler', i=i, pad='x' * 120)\n"
        "    logging.getLogger('halton_meter.std').warning('stdlib line %d', i)\n"
    )
    env = {**os.environ, "HALTON_METER_LOG_DIR": str(log_dir)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    names = sorted(p.name for p in log_dir.iterdir())
    assert names == ["core.log", "core.log.1", "core.log.2", "core.log.3"], names  # 3 kept, older dropped
    for path in log_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.stat().st_size <= 4096 + 400, path
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700


# --------------------------------------------------------------------------------------------------
# S8, S9, S13: the search (runs last in this module: it stops the meter)
# --------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_s8_s9_s13_no_canary_in_the_database_wal_spool_or_logs(sec: Setup) -> None:
    meter = sec.meter
    assert meter.rows(), "the calls above did not land, so this search proves nothing"
    assert meter.stop() == 0
    searched, hits = [], []
    for path in meter.files_at_rest():
        data = path.read_bytes()
        searched.append(path.name)
        if b"CANARY" in data:
            hits.append(f"{path}: {data[max(0, data.find(b'CANARY') - 60): data.find(b'CANARY') + 40]!r}")
    assert {"db.sqlite", "core.log", "edge.log", "serve.log"} <= set(searched), searched
    assert hits == []
