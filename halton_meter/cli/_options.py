"""Options shared by `report`, `projects`, `calls` and `retag`: time windows and dimension filters."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from halton_meter.timewindow import Window, describe, resolve_window

F = TypeVar("F", bound=Callable[..., Any])


def now() -> datetime.datetime:
    """The current time (tests replace this to pin "today")."""
    return datetime.datetime.now(datetime.UTC)


def window_options(default_since: str | None, calendar: bool = True) -> Callable[[F], F]:
    """--today/--yesterday/--week/--month (local calendar), --since and --until."""
    default_text = f"default: {default_since}, the last {describe(default_since)}" if default_since else "default: all time"

    def decorate(fn: F) -> F:
        options = [
            click.option("--until", default=None, metavar="WHEN",
                         help="End of the window, exclusive (same forms as --since; default: now)."),
            click.option("--since", default=None, metavar="WHEN",
                         help=f"Start of the window: 7d, 24h, 90m, a date (2026-11-01, local midnight) or an ISO "
                              f"time ({default_text})."),
        ]
        if calendar:
            options += [
                click.option("--month", is_flag=True, help="This month so far (since the 1st, 00:00 local)."),
                click.option("--week", is_flag=True, help="This week so far (since Monday 00:00 local)."),
                click.option("--yesterday", is_flag=True, help="Yesterday, midnight to midnight (local)."),
                click.option("--today", is_flag=True, help="Today so far (since 00:00 local)."),
            ]
        for option in options:
            fn = option(fn)
        return fn

    return decorate


def window_from(params: Mapping[str, Any], default_since: str | None) -> Window:
    return resolve_window(today=params.get("today", False), yesterday=params.get("yesterday", False),
                          week=params.get("week", False), month=params.get("month", False),
                          since=params.get("since"), until=params.get("until"), default_since=default_since,
                          now=now())


FILTER_DESTS = {"project": "projects", "model": "models", "provider": "providers", "client": "clients",
                "branch": "branches", "key": "keys"}


def filter_options[G: Callable[..., Any]](fn: G) -> G:
    """--project/--model/--provider/--client/--branch/--key, each repeatable (any of the values)."""
    for name, what in reversed((
        ("project", "a project"), ("model", "a model (globs like 'claude-sonnet-*' work)"),
        ("provider", "a provider (anthropic, openai, …)"), ("client", "a tool (claude-code, cursor, curl, …)"),
        ("branch", "a git branch"), ("key", "a key fingerprint (or its start) or a name from [keys]"),
    )):
        fn = click.option(f"--{name}", FILTER_DESTS[name], multiple=True, metavar="NAME",
                          help=f"Only calls of {what}; repeat for several. `(none)` matches a missing value.")(fn)
    return fn


def filters_from(params: Mapping[str, Any], key_names: Mapping[str, str]) -> Any:
    from halton_meter.report import key_filter
    from halton_meter.store.aggregate import Filters

    return Filters(project=params["projects"], model=params["models"], provider=params["providers"],
                   client=params["clients"], branch=params["branches"], key=key_filter(params["keys"], key_names))
