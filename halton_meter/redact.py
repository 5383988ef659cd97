"""Redaction: the one module that decides what may be stored about a call beyond its numbers.

Three uses, one set of credential shapes (`_PATTERNS`):

* `redact(text)` for opt-in body capture (the only place bodies are ever stored): credential-shaped
  substrings become `[REDACTED]`, the rest of the text stays.
* `redact_path(path)` for every stored request path: each path segment, query value and fragment part
  that carries a credential (by its parameter's name, or by its shape) becomes `REDACTED`.
* `safe_error_type()` and `safe_extra()` for what parsers report: provider free text (error messages,
  sentences used as error codes) is never stored, only short identifiers.

See docs/privacy.md for the rules in prose.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote

REDACTED = "[REDACTED]"
"""What `redact()` puts in captured bodies in place of a credential."""
PATH_REDACTED = "REDACTED"
"""What `redact_path()` puts in a stored path in place of a segment, query value or fragment part."""

_PATTERNS = [
    r"sk-ant-[A-Za-z0-9_\-]{8,}",  # Anthropic keys and OAuth tokens
    r"sk-(?:proj|svcacct|admin|or-v1)-[A-Za-z0-9_\-]{8,}",  # OpenAI project/service keys, OpenRouter
    r"sk-[A-Za-z0-9]{20,}",  # classic OpenAI, DeepSeek
    r"xai-[A-Za-z0-9]{20,}",
    r"gsk_[A-Za-z0-9]{20,}",
    r"AIza[0-9A-Za-z_\-]{30,}",  # Google API keys
    r"ya29\.[0-9A-Za-z_\-]{20,}",  # Google OAuth access tokens
    r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWTs (ChatGPT sign-in)
    r"gh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens pasted into prompts
    r"AKIA[0-9A-Z]{16}",  # AWS access key ids
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
]
_TOKEN = re.compile("|".join(f"(?:{p})" for p in _PATTERNS))
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}")
_ASSIGNMENT = re.compile(
    r"""(?i)((?:api[_-]?key|access[_-]?token|secret|password|passwd|authorization)["']?\s*[:=]\s*["']?)"""
    r"""[^\s"',}]{6,}"""
)


def redact(text: str) -> str:
    text = _TOKEN.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)


def has_credential_shape(text: str) -> bool:
    """`text` contains something `redact()` would remove: a known key prefix, a bearer token, a
    `password=…`-style assignment or a private key."""
    return bool(_TOKEN.search(text) or _BEARER.search(text) or _ASSIGNMENT.search(text))


# --------------------------------------------------------------------------------------------------
# Long high-entropy tokens
# --------------------------------------------------------------------------------------------------

TOKEN_MIN_LENGTH = 20
"""A token is at least this many characters (10 random bytes as hex, 15 as base64)."""
TOKEN_MIN_ENTROPY = 2.0
"""Bits per character (Shannon, over the token's own characters). Entropy alone cannot tell a key from a
model id at these lengths (random base64 of 20 characters averages 4.0 bits, random hex 3.4, model ids
3.5 to 4.5), so it is a floor that only rules out repetition (`aaaa…`, `abab…`, `0101…`); no random hex
string of 20 characters in 500,000 fell below it. The character-class rules do the rest."""

_RUN = re.compile(r"[A-Za-z0-9+/=_-]+")
"""Token characters: the base64 and base64url alphabets. Anything else (`.`, `:`, `@`, `~`, `%`, space,
`,`, `;`, …) ends a run, so model ids split at their dots and colons."""
_STRETCH = re.compile(r"[A-Za-z0-9]+")
_NATURAL_WORD = re.compile(
    r"(?:(?:[a-z]{2,}|[A-Z][a-z]{2,})(?:[A-Z][a-z]{2,})*|[A-Z]{1,4}|[0-9]{1,8}|[a-z])"
    r"(?P<version>(?:[A-Za-z]?[0-9]+)*[A-Za-z]?)"
)
_MAX_VERSION_BITS = 4
_SYLLABLES = re.compile(r"[A-Z][a-z]{2,}|(?<![A-Za-z])[a-z]{4,}")
_VOWEL = re.compile(r"[aeiouyAEIOUY]")
_DICTIONARY_WORD = re.compile(r"[A-Z]?[a-z]{3,}")
_STRICT_VOWEL = re.compile(r"[aeiouAEIOU]")


def shannon_entropy(text: str) -> float:
    """Bits per character of `text`'s own character distribution (0 for an empty string)."""
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values()) if n else 0.0


def _natural_word(word: str) -> bool:
    match = _NATURAL_WORD.fullmatch(word)
    return (
        match is not None
        and len(match.group("version")) <= _MAX_VERSION_BITS
        and all(_VOWEL.search(syllable) for syllable in _SYLLABLES.findall(word))
    )


def _dictionary_word(word: str) -> bool:
    match = _DICTIONARY_WORD.match(word)
    return match is not None and _STRICT_VOWEL.search(match.group()) is not None


def natural_identifier(run: str) -> bool:
    """Whether a mixed-case run reads like a name rather than a random string.

    Every word of it (an alphanumeric stretch between separators) must be a lowercase word and/or
    Titlecase words (`stream`, `Deep`, `DeepSeek`, `tunedModels`), an acronym of up to 4 capitals or a
    number or a single letter, followed by at most 4 characters of version bits (`3`, `17B`, `8x7B`,
    `v1`); every Titlecase word and every lowercase word of 4+ letters has a vowel (`aeiouy`). A run
    without digits is then a name (`streamGenerateContent`). A run with digits also needs at least three
    words, two of which start with a word of 3+ letters that has a vowel (`aeiou`):
    `DeepSeek-R1-Distill-Qwen-32B`, `Llama-4-Maverick-17B-128E-Instruct-FP8`, `Contoso-GPT4o-Deployment-01`.
    """
    words = _STRETCH.findall(run)
    if not all(_natural_word(w) for w in words):
        return False
    if not any(c.isdigit() for c in run):
        return True  # letters only: camelCase (`streamGenerateContent`) or Titlecase words
    return len(words) >= 3 and sum(1 for w in words if _dictionary_word(w)) >= 2


def is_high_entropy_token(run: str) -> bool:
    """Whether one run of token characters (see `_RUN`) is a long high-entropy token, i.e. random enough to
    be a key, a signature or a session token. All of:

    1. at least `TOKEN_MIN_LENGTH` (20) characters;
    2. Shannon entropy at least `TOKEN_MIN_ENTROPY` (2.0) bits per character;
    3. it mixes character classes the way random strings do and identifiers do not, either
       a. it has an unbroken stretch of 20+ letters and digits, in a single letter case, with both
          letters and digits (hex, base32 and base36 keys: `secrets.token_hex(20)`, Azure keys), or
       b. it has both upper- and lowercase letters (base64, base64url, base62: `secrets.token_urlsafe(24)`,
          SAS `sig=` values, AWS secret keys) and does not read like a name (`natural_identifier`):
          camelCase (`streamGenerateContent`) or a mixed-case model name (`DeepSeek-R1-Distill-Qwen-32B`).

    Kept: lowercase model ids with separators (`claude-sonnet-4-5-20250929`, `gemini-2.5-flash-preview-
    05-20`), UUIDs (no unbroken stretch of 20), dates, versions, numbers, camelCase method names, mixed-case
    model names with separators. Redacted because they look random: opaque ids of 20+ random characters
    (`msgbatch_013Zva2…`, `resp_68af40…`, git hashes) and names written as one unbroken word with digits
    (`gpt4omini20240718deployment`, `GPT4oMiniProdEastUS2Deploy`). Not recognised by shape: tokens of
    only digits, or only letters in one case, or broken by characters outside `_RUN` into pieces shorter
    than 20 (the named-parameter rule and the known prefixes still apply).
    """
    if len(run) < TOKEN_MIN_LENGTH or shannon_entropy(run) < TOKEN_MIN_ENTROPY:
        return False
    for stretch in _STRETCH.findall(run):
        if (
            len(stretch) >= TOKEN_MIN_LENGTH
            and (stretch.islower() or stretch.isupper())  # one letter case, and at least one letter
            and not stretch.isalpha()  # and at least one digit
        ):
            return True
    upper = sum(1 for c in run if c.isupper())
    lower = sum(1 for c in run if c.islower())
    if not (upper and lower):
        return False
    return not natural_identifier(run)


_MAX_DECODINGS = 4


def _decodings(text: str) -> Iterator[str]:
    """`text`, then its percent-decodings (repeated: a value may be encoded twice) until nothing changes."""
    yield text
    for _ in range(_MAX_DECODINGS):
        decoded = unquote(text, errors="replace")
        if decoded == text:
            return
        text = decoded
        yield text


def _normal_name(name: str) -> str:
    """A parameter name as compared: percent-decoded, ignoring case, `-` and `_` (`X-Goog-Api-Key` is
    `x_goog_apikey`)."""
    return unquote(name, errors="replace").strip().lower().replace("-", "").replace("_", "")


_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_INNER_PAIR = re.compile(r"(?:^|[?&#;])([^=&?#;]+)=([^&#;]*)")


SHORTEST_CREDENTIAL = 13
"""No credential shape (`has_credential_shape`: `sk-ant-` + 8, `password=` + 6 …) or token
(`TOKEN_MIN_LENGTH`) fits in fewer characters."""


@functools.lru_cache(maxsize=64)
def _normal_names(secret_params: frozenset[str]) -> frozenset[str]:
    return frozenset(_normal_name(p) for p in secret_params)


def looks_secret(text: str, secret_params: Iterable[str] = ()) -> bool:
    """`text` (a path segment, a query value, a label), raw or percent-decoded, carries a credential: a
    known credential shape, a long high-entropy token, or (for a value that is itself a URL or a query
    string) a `name=value` pair whose name is in `secret_params`."""
    if len(text) < SHORTEST_CREDENTIAL and "%" not in text and "=" not in text:
        return False  # shorter than any shape below, and no name=value pair inside it
    names = _normal_names(frozenset(secret_params))
    for candidate in _decodings(text):
        if has_credential_shape(candidate):
            return True
        # An escape still in the text (`%3A` before decoding) separates runs: its hex digits are not
        # part of a token (`arn%3Aaws` is `arn`, `aws`; the decoded form is checked on its own).
        if any(is_high_entropy_token(run) for run in _RUN.findall(_ESCAPE.sub(" ", candidate))):
            return True
        if names and any(
            _normal_name(m.group(1)) in names and m.group(2) for m in _INNER_PAIR.finditer(candidate)
        ):
            return True
    return False


# --------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------

CREDENTIAL_QUERY_PARAMS = frozenset({
    "key", "api_key", "api-key", "apikey", "access_token", "token",
    "x-goog-api-key", "x-api-key", "auth", "authorization", "sig", "signature", "client_secret", "secret",
    "password", "refresh_token", "id_token", "session_token", "x-amz-security-token", "x-amz-signature",
    "x-amz-credential",
})
"""Query parameters whose values are always redacted, whatever they look like. Names match ignoring case,
`-` and `_` (`apiKey`, `API-KEY` and `api_key` are one name)."""


def _redact_pairs(text: str, names: frozenset[str], secret_params: Iterable[str]) -> str:
    """A query string or fragment with each credential value (by name or shape) replaced."""
    out = []
    for item in text.split("&"):
        name, eq, value = item.partition("=")
        if not eq:
            out.append(PATH_REDACTED if item and looks_secret(item, secret_params) else item)
        elif looks_secret(name, secret_params):
            out.append(f"{PATH_REDACTED}={PATH_REDACTED}")
        elif _normal_name(name) in names or looks_secret(value, secret_params):
            out.append(f"{name}={PATH_REDACTED}")
        else:
            out.append(item)
    return "&".join(out)


def redact_path(path: str, secret_params: Iterable[str] = CREDENTIAL_QUERY_PARAMS) -> str:
    """The request path as it may be stored: every path segment, query value and fragment part that
    carries a credential is replaced by `REDACTED`; parameter names and every other byte stay as sent.

    A query value is always replaced when its parameter is named in `secret_params` (`key=`, whatever the
    value). Any segment, value or fragment part is replaced when it, or its percent-decoding (applied
    repeatedly), contains a known credential shape (`has_credential_shape`), a long high-entropy token
    (`is_high_entropy_token`), or an inner `name=value` pair with a credential name. The whole segment or
    value is replaced, never just the matching part, so no piece of a secret is left behind. If anything
    goes wrong the answer is `REDACTED`: a path is never stored unchecked."""
    try:
        secret_params = frozenset(secret_params)
        names = _normal_names(secret_params)
        rest, hash_mark, fragment = path.partition("#")
        base, question, query = rest.partition("?")
        segments = [PATH_REDACTED if s and looks_secret(s, secret_params) else s for s in base.split("/")]
        out = "/".join(segments)
        if question:
            out += "?" + _redact_pairs(query, names, secret_params)
        if hash_mark:
            out += "#" + _redact_pairs(fragment, names, secret_params)
        return out
    except Exception:  # noqa: BLE001 - fail closed
        return PATH_REDACTED


# --------------------------------------------------------------------------------------------------
# Provider free text: error ids and extra
# --------------------------------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")
_MAX_IDENTIFIER_WORDS = 6


def is_identifier(value: Any) -> bool:
    """A short machine identifier, as error types and codes are (`rate_limit_exceeded`,
    `RESOURCE_EXHAUSTED`, `1300`): 1–64 characters of letters, digits, `_ . : -`, starting with a letter
    or digit, at most 6 words, and no credential shape or high-entropy token. A sentence, or a sentence
    turned into a slug (`the_model_does_not_exist_or_you_do_not_have_access`), is not."""
    return (
        isinstance(value, str)
        and _IDENTIFIER.fullmatch(value) is not None
        and len(re.split(r"[_.:\-]+", value)) <= _MAX_IDENTIFIER_WORDS
        and not looks_secret(value)
    )


def safe_error_type(error_type: str | None, status: int | None, incomplete_reason: str | None = None) -> str | None:
    """The error id to store: the parser's own when it is an identifier (`is_identifier`), else a generic
    one that says no more than the meter saw itself: `http_<status>` for an HTTP error status,
    `stream_error` for an error inside a stream, `error` otherwise."""
    if error_type is None or is_identifier(error_type):
        return error_type
    if status is not None and status >= 400:
        return f"http_{status}"
    if incomplete_reason == "stream_error":
        return "stream_error"
    return "error"


_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:/@+\-]{0,63}")
_MAX_LABEL_WORDS = 4
_MAX_EXTRA_DEPTH = 4


def is_label(value: str) -> bool:
    """A short label a parser may keep from a response: an identifier, a number written as a string
    (`0.02415`), a model id (`openai/gpt-oss-120b`) or a name of up to 4 words (`Google AI Studio`):
    1–64 characters of letters, digits, space and `_ . : / @ + -`, and no credential shape or high-entropy
    token. Messages (punctuation, more words) are not labels."""
    return (
        _LABEL.fullmatch(value) is not None
        and len(value.split()) <= _MAX_LABEL_WORDS
        and not looks_secret(value)
    )


def _safe_value(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return value if is_label(value) else PATH_REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_EXTRA_DEPTH:
        return PATH_REDACTED
    if isinstance(value, dict):
        return {k: _safe_value(v, depth + 1) for k, v in value.items() if isinstance(k, str) and is_label(k)}
    if isinstance(value, list | tuple):
        return [_safe_value(v, depth + 1) for v in value]
    return PATH_REDACTED


def safe_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """A parser's `extra` as it may be stored. Parsers fill `extra` from provider responses, so every
    string in it, at any depth, must be a label (`is_label`); any other string becomes `REDACTED`. Keys
    that are not labels are dropped, and so are values of types JSON does not have. Numbers, booleans
    and null pass. The core's own diagnostics (`decode_failure`, `connection_error`, …) are added after
    this, by the record builder, and are not provider text."""
    return _safe_value(dict(extra), 0)
