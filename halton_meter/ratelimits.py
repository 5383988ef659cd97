"""What a provider says about its limits, read from a response's headers: the plan windows of a Claude or
ChatGPT subscription and the rate limits of an API key. Each becomes a snapshot (one dict per window) that
the writer stores in `plan_snapshots` with the call's final row; `halton-meter plan`, `blocks` and
`statusline` read them. Only these figures are kept, never another header's value.

Families read (docs/plans.md lists the exact header names):

* Anthropic subscription (Claude Code signed in with a plan): `anthropic-ratelimit-unified-<window>-utilization`
  (0..1), `-reset` (epoch seconds) and `-status` for each window the response names (`5h`, `7d`, `7d_opus`,
  `7d_sonnet`, and any other: unknown windows are kept), plus the account's overall `-status`, `-reset`,
  `-representative-claim`, `-fallback-percentage` (window `unified`) and `-overage-status` /
  `-overage-reset` (window `overage`).
* Codex signed in with ChatGPT: `x-codex-{primary,secondary}-used-percent` (0..100), `-window-minutes`,
  `-reset-at` (epoch seconds) or `-reset-after-seconds`; the window is named by its length (`5h`, `7d`,
  else `<minutes>m`), since a plan may report its weekly window as `primary`. `x-codex-active-limit` and
  `x-codex-rate-limit-reached-type` go to window `unified`.
* API keys: Anthropic `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
  (reset in RFC 3339) and OpenAI-style `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a
  duration: `6m0s`, `1.5s`, `20ms`), which xAI, Groq and others send too. Utilization is 1 − remaining/limit.

Parsing is defensive: a value that does not parse is left out (its window keeps what did parse); a window
with nothing usable is dropped; nothing here raises.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable
from typing import Any

UNIFIED = "anthropic-ratelimit-unified-"
CODEX = "x-codex-"
_ANTHROPIC_API = re.compile(r"^anthropic-ratelimit-(requests|tokens|input-tokens|output-tokens)-(limit|remaining|reset)$")
_OPENAI_API = re.compile(r"^x-ratelimit-(limit|remaining|reset)-(requests|tokens)$")
_UNIFIED_WINDOW = re.compile(r"^anthropic-ratelimit-unified-([a-z0-9_]+)-(utilization|reset|status)$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
MAX_WINDOWS = 16
"""At most this many snapshots per response: a response cannot fill the table with made-up windows."""
MAX_TEXT = 64
_GLOBAL_KEYS = {"status", "reset", "representative-claim", "fallback-percentage", "overage-status", "overage-reset",
                "fallback"}


def _iso(epoch: float) -> str | None:
    try:
        return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, OSError, ValueError):
        return None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None  # no NaN, no infinities


def _text(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text[:MAX_TEXT] if text and text.isprintable() else None


def _epoch_iso(text: str | None) -> str | None:
    value = _number(text)
    return _iso(value) if value is not None and value > 0 else None


def _rfc3339_iso(text: str | None) -> str | None:
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return _epoch_iso(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return _iso(moment.timestamp())


def _duration_seconds(text: str | None) -> float | None:
    """`6m0s`, `1.5s`, `20ms`, `1h2m3s` → seconds; a bare number is seconds."""
    if not text:
        return None
    text = text.strip()
    plain = _number(text)
    if plain is not None:
        return plain
    total, end = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != end:
            return None
        end = match.end()
        amount, unit = float(match.group(1)), match.group(2)
        total += amount * {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}[unit]
    return total if end == len(text) and end else None


def _clamp01(value: float | None) -> float | None:
    return None if value is None else min(max(value, 0.0), 10.0)  # over 1 is possible (over the limit): kept


def window_label(minutes: int) -> str:
    """A window's name from its length: 300 → `5h`, 10080 → `7d`, 90 → `90m`."""
    if minutes > 0 and minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes > 0 and minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def snapshots(headers: Iterable[tuple[str, str]], seen: float, *, provider: str,
              account: str | None) -> list[dict[str, Any]]:
    """The snapshots in one response's headers (name/value pairs, any case), seen at epoch `seen`."""
    found: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(("anthropic-ratelimit-", "x-codex-", "x-ratelimit-")) and len(found) < 256:
            found[lower] = value
    if not found:
        return []
    base = {"seen_at": _iso(seen), "provider": provider, "account": account or ""}
    out: list[dict[str, Any]] = []
    for reader in _READERS:
        out.extend(reader(found, seen))
        if len(out) >= MAX_WINDOWS:
            break
    return [{**base, **snap} for snap in out[:MAX_WINDOWS]]


def _unified(found: dict[str, str], seen: float) -> list[dict[str, Any]]:
    windows: dict[str, dict[str, Any]] = {}
    for name, value in found.items():
        match = _UNIFIED_WINDOW.match(name)
        if match is None:
            continue
        window, part = match.groups()
        if window in ("overage", "fallback"):
            continue  # account-wide, read below
        snap = windows.setdefault(window, {"kind": "plan", "window": window})
        if part == "utilization":
            snap["utilization"] = _clamp01(_number(value))
        elif part == "reset":
            snap["resets_at"] = _epoch_iso(value)
        else:
            snap["status"] = _text(value)
    out = [w for w in windows.values() if any(w.get(k) is not None for k in ("utilization", "resets_at", "status"))]
    for snap in out:
        if snap["window"].startswith(("5h", "7d")):
            snap["window_minutes"] = 300 if snap["window"] == "5h" else 10080 if snap["window"].startswith("7d") \
                else None
    overall = {"kind": "plan", "window": "unified", "status": _text(found.get(UNIFIED + "status")),
               "resets_at": _epoch_iso(found.get(UNIFIED + "reset")),
               "claim": _text(found.get(UNIFIED + "representative-claim")),
               "fallback_percentage": _number(found.get(UNIFIED + "fallback-percentage"))}
    if any(overall[k] is not None for k in ("status", "resets_at", "claim", "fallback_percentage")):
        out.append(overall)
    overage = {"kind": "plan", "window": "overage", "status": _text(found.get(UNIFIED + "overage-status")),
               "resets_at": _epoch_iso(found.get(UNIFIED + "overage-reset"))}
    if overage["status"] is not None or overage["resets_at"] is not None:
        out.append(overage)
    return out


def _codex(found: dict[str, str], seen: float) -> list[dict[str, Any]]:
    out = []
    for slot in ("primary", "secondary"):
        used = _number(found.get(f"{CODEX}{slot}-used-percent"))
        minutes = _number(found.get(f"{CODEX}{slot}-window-minutes"))
        reset = _epoch_iso(found.get(f"{CODEX}{slot}-reset-at"))
        if reset is None:
            after = _number(found.get(f"{CODEX}{slot}-reset-after-seconds"))
            reset = _iso(seen + after) if after is not None and after >= 0 else None
        if used is None and reset is None:
            continue
        whole = int(minutes) if minutes is not None and minutes > 0 else None
        out.append({"kind": "plan", "window": window_label(whole) if whole else slot, "window_minutes": whole,
                    "utilization": _clamp01(used / 100) if used is not None else None, "resets_at": reset,
                    "claim": slot})
    active, reached = _text(found.get(CODEX + "active-limit")), _text(found.get(CODEX + "rate-limit-reached-type"))
    if out and (active or reached):
        out.append({"kind": "plan", "window": "unified", "claim": active,
                    "status": f"rejected:{reached}" if reached else "allowed"})
    return out


def _api(found: dict[str, str], seen: float) -> list[dict[str, Any]]:
    windows: dict[str, dict[str, Any]] = {}
    for name, value in found.items():
        match = _ANTHROPIC_API.match(name)
        if match is not None:
            window, part = match.groups()
            reset: Callable[[str], str | None] = _rfc3339_iso
        else:
            match = _OPENAI_API.match(name)
            if match is None:
                continue
            part, window = match.groups()

            def reset(text: str) -> str | None:
                after = _duration_seconds(text)
                return _iso(seen + after) if after is not None and after >= 0 else None
        snap = windows.setdefault(window, {"kind": "api", "window": window})
        if part == "reset":
            snap["resets_at"] = reset(value)
        else:
            number = _number(value)
            snap["limit_value" if part == "limit" else "remaining"] = int(number) if number is not None else None
    out = []
    for snap in windows.values():
        limit, remaining = snap.get("limit_value"), snap.get("remaining")
        if limit is not None and remaining is not None and limit > 0:
            snap["utilization"] = _clamp01(1 - remaining / limit)
        if any(snap.get(k) is not None for k in ("limit_value", "remaining", "resets_at")):
            out.append(snap)
    return out


_READERS = (_unified, _codex, _api)


def session_from_request(headers: Iterable[tuple[str, str]], body: Any) -> str | None:
    """The client's session id, from what the client already sends: Claude Code's `X-Claude-Code-Session-Id`
    header (2.1.86 and later) or the session in `metadata.user_id` (a JSON string with `session_id`, or
    the older `user_<hash>_account_<id>_session_<uuid>`); Codex's `session_id` header. Only an id-shaped
    value (letters, digits, `-`, `_`, up to 64) is taken."""
    wanted = {"x-claude-code-session-id", "session_id", "session-id"}
    for name, value in headers:
        if name.lower() in wanted:
            found = _id(value)
            if found:
                return found
    if isinstance(body, dict):
        metadata = body.get("metadata")
        user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
        if isinstance(user_id, str):
            if user_id.startswith("{"):
                import json

                try:
                    parsed = json.loads(user_id)
                except ValueError:
                    return None
                return _id(parsed.get("session_id")) if isinstance(parsed, dict) else None
            marker = user_id.rfind("_session_")
            if marker >= 0:
                return _id(user_id[marker + len("_session_"):])
    return None


_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if _ID.match(value) else None
