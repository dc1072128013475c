"""Property tests for user-supplied text: chain strings, durations and whole config files
raise only their documented errors, and passwords never come back out of redact(), a
chain's str() or an error message.

Leak checks are differential: the same input is also parsed with each password replaced by
a placeholder of the same length. A password that shows up in the real output but not in
the placeholder's is a leak; one that shows up in both is just a coincidence of words.
"""

from __future__ import annotations

import math
import re
import tomllib
from typing import Any
from urllib.parse import unquote

from hypothesis import example, given, note, settings
from hypothesis import strategies as st

from helper.config import (
    DENY,
    Config,
    ConfigError,
    is_loopback,
    layer_data,
    load_layers,
    parse_config,
    parse_duration,
)
from helper.config.file import parse_config_data, parse_toml
from helper.config.show import show
from helper.subscriptions.formats import SubscriptionError, parse_list
from tests.fuzz.strategies import (
    Choices,
    _chain,
    _duration,
    _redact_case,
    blank_chains,
    chains,
    configs,
    durations,
    redact_cases,
    toml_document,
)
from transports.chain import Chain, ChainError, parse_chain, redact
from transports.links import LinkError, recognise_link


def placeholders(text: str, passwords: list[str]) -> str:
    for pw in passwords:
        text = text.replace(f":{pw}@", ":" + "Q" * len(pw) + "@")
    return text


def assert_no_leak(shown: str, shown_with_placeholders: str, passwords: list[str]) -> None:
    for pw in passwords:
        if pw not in shown_with_placeholders:
            assert pw not in shown, f"password {pw!r} shown in {shown!r}"


# --- chains -------------------------------------------------------------------------------


def comparable(chain: Chain) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for layer in chain.layers:
        params = dict(layer.params)
        if params.get("password") is not None:
            params["password"] = "***"
        out.append((layer.name, params))
    return out


def shown_chain(text: str) -> tuple[Chain | None, str]:
    try:
        chain = parse_chain(text)
    except ChainError as exc:
        message = str(exc)
    else:
        return chain, str(chain)
    assert message, "a ChainError says what would be valid"
    return None, message


def _prop_parse_chain(case: tuple[str, list[str]]) -> None:
    """Any text is a Chain or a ChainError (nothing else); a Chain starts with its base and
    its str() parses back to the same layers (passwords shown as ***; a pt layer's bridge is
    hidden whole); neither str() nor the error shows a password."""
    text, passwords = case
    chain, shown = shown_chain(text)
    if chain is not None:
        assert chain.layers[0].name == "direct"
        if any(layer.name == "pt" for layer in chain.layers):
            # A bridge is hidden whole (pt:NAME ***), so that str() is not a chain again.
            assert "pt:" in shown and "***" in shown
        else:
            assert comparable(parse_chain(str(chain) or "direct")) == comparable(chain)
    if passwords:
        _, shown_placeholder = shown_chain(placeholders(text, passwords))
        assert_no_leak(shown, shown_placeholder, passwords)


def _prop_redact_hides_userinfo_passwords(case: tuple[str, str, str]) -> None:
    """redact() shows scheme://user:***@ for a userinfo password, and never the password."""
    text, pw, expected = case
    redacted = redact(text)
    assert expected in redacted
    assert_no_leak(redacted, redact(placeholders(text, [pw])), [pw])


WINDOW = 8  # the shortest piece of a password that must never be shown


def shown_every_way(text: str) -> str:
    """Everything detour may print about a chain: the text redacted (config show, messages),
    the parsed chain and its repr (config check, the log, /status), or the error."""
    chain, shown = shown_chain(text)
    extra = [repr(chain)] if chain is not None else []
    try:
        parse_config_data({"route": [{"name": "r", "chain": text}], "default": {"policy": "r"}})
    except ConfigError as exc:
        extra.append(str(exc))
    return "\n".join([redact(text), shown, *extra])


def _prop_blank_passwords_are_never_shown(case: tuple[str, list[str]]) -> None:
    """Passwords holding spaces, tabs and '|' (issue: the words after a blank, and the part
    before a '|', were shown): no piece of WINDOW characters of one appears in anything
    shown, unless it also appears when the passwords are placeholders (a coincidence)."""
    text, passwords = case
    shown = shown_every_way(text)
    placeholder_text = text
    for pw in passwords:
        placeholder_text = placeholder_text.replace(pw, "Q" * len(pw))
    shown_placeholder = shown_every_way(placeholder_text)
    note(shown)
    for pw in passwords:
        for i in range(len(pw) - WINDOW + 1):
            piece = pw[i : i + WINDOW]
            if piece not in shown_placeholder:
                assert piece not in shown, f"{piece!r} of password {pw!r} shown in {shown!r}"


# --- durations ----------------------------------------------------------------------------


def _prop_parse_duration_raises_only_value_error(value: Any) -> None:
    """Whatever TOML hands over: seconds in (0, a week], or ValueError."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert isinstance(seconds, float)
    assert 0 < seconds <= 7 * 86400 and not math.isnan(seconds)


# --- proxy URLs with '@', ':', '/', '?', '#' in their logins --------------------------------

_LOGIN_CHARS = "@:/?#%|ab7 "
_PROXY_HOSTS = ["10.0.0.1", "h", "[::1]", "proxy.example"]


def _proxy_url(raw: bytes) -> tuple[str, str]:
    """`SCHEME://USER:PASS@HOST:PORT` written as users paste it (nothing percent-encoded),
    and its password: the logins drawn from characters that are special in URLs."""
    c = Choices(raw)
    scheme = c.pick(["socks5", "http"])
    user = "".join(c.pick(_LOGIN_CHARS) for _ in range(c.size(4))) or "u"
    password = "".join(c.pick(_LOGIN_CHARS) for _ in range(1 + c.size(9)))
    host, port = c.pick(_PROXY_HOSTS), 1 + c.byte()
    return f"{scheme}://{user}:{password}@{host}:{port}", password


proxy_urls = st.binary(max_size=24).map(_proxy_url)


def _rfc3986(text: str) -> tuple[str, int, str | None, str | None] | None:
    """What RFC 3986 reads in a proxy URL: the authority ends at the first '/', '?' or '#',
    its userinfo at its last '@', the user name at the userinfo's first ':'. None: it holds
    more than an authority."""
    rest = text.partition("://")[2]
    authority = re.match(r"[^/?#]*", rest).group(0)  # type: ignore[union-attr]
    if authority != rest.rstrip("/"):
        return None
    userinfo, at, hostport = authority.rpartition("@")
    user, colon, password = userinfo.partition(":")
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        return None
    return (
        host.strip("[]"),
        int(port),
        unquote(user) if at else None,
        unquote(password) if colon else None,
    )


def _read_as(kind: str, text: str) -> tuple[str, tuple | str]:
    """("ok", (host, port, user, password)) or ("error", message), read as a config route's
    chain, a link given to `detour add`, or a line of a subscription's list."""
    try:
        if kind == "link":
            text = recognise_link(text).chain
        elif kind == "subscription":
            parsed = parse_list((text + "\n").encode(), allow_private=True)
            text = parsed.nodes[0].chain
        params = parse_chain(text).layers[-1].params
    except (ChainError, LinkError, SubscriptionError) as exc:
        return "error", str(exc)
    proxy = params["proxy"]
    return "ok", (proxy.host, proxy.port, params.get("username"), params.get("password"))


def _prop_proxy_urls_read_alike(case: tuple[str, str]) -> None:
    """A proxy URL whose login holds '@', ':', '/', '?' or '#' unescaped is read the same by
    every parser (`detour add`, a config route, a subscription): as RFC 3986 reads it, or
    refused by all; a refusal where an '@' follows a '/', '?' or '#' says to percent-encode,
    and none shows the password."""
    text, password = case
    results = {kind: _read_as(kind, text) for kind in ("chain", "link", "subscription")}
    note(repr(results))
    assert results["link"] == results["subscription"] or (
        results["link"][0] == results["subscription"][0] == "error"
    )
    if "#" not in text:  # (a link's '#' starts its name; a chain has none)
        assert results["chain"][0] == results["link"][0]
    expected = _rfc3986(text.partition("#")[0])  # (a link's name, after '#', is no address)
    for outcome, value in results.values():
        if outcome == "ok":
            assert value == expected
            continue
        rest = text.partition("://")[2]
        after = rest[re.match(r"[^/?#]*", rest).end() :]  # type: ignore[union-attr]
        if "@" in after and "|" not in text:  # ('|' cuts the chain first: _prop_blank_...)
            assert "percent-encode" in value, value
        if len(password) >= 4 and password.strip():
            assert password not in value, value


# --- the properties above, in one test -----------------------------------------------------
#
# Hypothesis' own work for an example costs more than most of these checks, and CI runs
# 10,000 examples of each test: the chain and duration properties share a test, and so
# hypothesis' work, each with its own input drawn as it was when it had a test of its own.


@given(
    chain=chains,
    redacted=redact_cases,
    blank=blank_chains,
    duration=durations,
    proxy_url=proxy_urls,
)
@example(  # a password starting "//" right after the user name's ':' (found at 10,000)
    chain=_chain(bytes(48)),
    redacted=_redact_case(bytes(40)),
    blank=(
        "socks5://u: pw1@10.0.0.2:1080 | socks5://aaaa=:// aaaaaaaaaa@7:1080",
        [" pw1", "// aaaaaaaaaa"],
    ),
    duration=_duration(bytes(16)),
    proxy_url=_proxy_url(bytes(24)),
)
def test_chains_redaction_blank_passwords_and_durations(
    chain: tuple[str, list[str]],
    redacted: tuple[str, str, str],
    blank: tuple[str, list[str]],
    duration: Any,
    proxy_url: tuple[str, str],
) -> None:
    _prop_parse_chain(chain)
    _prop_redact_hides_userinfo_passwords(redacted)
    _prop_blank_passwords_are_never_shown(blank)
    _prop_parse_duration_raises_only_value_error(duration)
    _prop_proxy_urls_read_alike(proxy_url)


# --- whole config files -------------------------------------------------------------------


def check_config(cfg: Config) -> None:
    names = [r.name for r in cfg.routes]
    assert names and len(set(names)) == len(names)
    assert DENY not in names
    assert cfg.default_policy == DENY or cfg.default_policy in names
    assert is_loopback(cfg.listen.mixed) or cfg.listen.users or cfg.listen.allow
    services = [s.name for s in cfg.services]
    assert len(set(services)) == len(services)
    for service in cfg.services:
        assert service.domains or service.cidrs
        assert set(service.routes) <= set(names)
        assert all(0 < port < 65536 for port in service.ports)


def shown_config(text: str) -> tuple[Config | None, str]:
    try:
        cfg = parse_config(text, "fuzz.toml")
    except ConfigError as exc:
        error = exc
    else:
        return cfg, ""
    assert error.problems
    for problem in error.problems:
        assert problem.startswith("not valid TOML: ") or ": " in problem, problem
    return None, str(error)


BUILT_IN = load_layers()


def shown_layered(text: str) -> tuple[Config | None, str]:
    """The document as a file given with -c: on the built-in config (or alone, as its
    [base] says); the config and `detour config show`'s text, or the error's."""
    try:
        loaded = layer_data(parse_toml(text, "fuzz.toml"), "fuzz.toml", built_in=BUILT_IN)
    except ConfigError as exc:
        error = exc
    else:
        return loaded.config, show(loaded)
    assert error.problems
    assert all(p.startswith("not valid TOML: ") or ": " in p for p in error.problems)
    return None, str(error)


# Each example validates five whole documents (the document, alone and on the built-in
# config, its placeholder twin, its half and the raw text), some 4 ms of work: a quarter of
# the profile's examples keeps this property near ten seconds on the CI profile (and scales
# with --long).
@settings(max_examples=max(50, settings.default.max_examples // 4))
@given(configs)
def test_parse_config(case: tuple[dict[str, Any], list[str], str]) -> None:
    """Any document is a Config that keeps the promises validation makes, or a ConfigError
    whose problems each name a key path (or TOML); no problem quotes a chain's password.
    Any text at all, and the document cut in half, are a ConfigError too (or a Config). The
    same holds for the document on the built-in config, and `config show` hides passwords."""
    doc, passwords, raw = case
    text = toml_document(doc)
    note(text)
    cfg, shown = shown_config(text)
    if cfg is not None:
        check_config(cfg)
    elif passwords:
        _, shown_placeholder = shown_config(placeholders(text, passwords))
        assert_no_leak(shown, shown_placeholder, passwords)
    for other in (raw, text[: len(text) // 2]):
        cfg, _ = shown_config(other)
        if cfg is not None:
            check_config(cfg)
    # The same document as a file given with -c: on the built-in config, or alone.
    cfg, shown = shown_layered(text)
    if cfg is not None:
        check_config(cfg)
        tomllib.loads(shown)  # `config show` prints TOML
    if passwords:
        _, shown_placeholder = shown_layered(placeholders(text, passwords))
        assert_no_leak(shown, shown_placeholder, passwords)
