from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from halton_meter.paths import Paths


@click.command("dashboard")
@click.option("--no-open", is_flag=True, help="Print the login link only; do not open a browser.")
def command(no_open: bool) -> int:
    """Open the dashboard of the running meter in your browser, signed in.

    Asks the meter's loopback API for a login link: it works once, within 60 seconds, and trades itself
    for a session cookie (HttpOnly, SameSite=Strict) that lasts until 12 hours unused, logout or the
    meter's restart. No token is ever put in a URL. See docs/dashboard.md.
    """
    import webbrowser

    from halton_meter.paths import Paths
    from halton_meter.serve.runtime import require_running

    paths = Paths.from_env()
    runtime = require_running(paths)
    link = login_link(paths, int(runtime["api_port"]))
    click.echo(f"Dashboard: {link['url']}  (the link works once, for {link['expires_in']} s)")
    if not no_open:
        try:
            opened = webbrowser.open(link["url"])
        except Exception:  # no usable browser here: the printed link is the answer
            opened = False
        if not opened:
            click.echo("No browser could be opened here: open the link above yourself.", err=True)
    return 0


def login_link(paths: Paths, port: int) -> dict[str, Any]:
    """A fresh single-use login link from the API on `port` (authenticated with the API token)."""
    import json
    import urllib.error
    import urllib.request

    from halton_meter.errors import HaltonError, NotRunningError
    from halton_meter.serve.api import read_token

    token = read_token(paths)
    if token is None:
        raise NotRunningError(f"no API token in {paths.home}; start the meter with `halton-meter serve`")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/login-codes", method="POST", data=b"",
                                     headers={"Authorization": f"Bearer {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise HaltonError(f"the meter's API at 127.0.0.1:{port} refused a login link (HTTP {exc.code}); "
                          "restart the meter with `halton-meter restart`") from None
    except (OSError, ValueError):
        raise NotRunningError(f"the meter's API at 127.0.0.1:{port} does not answer; start it again with "
                              "`halton-meter serve`") from None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise HaltonError(f"the meter's API at 127.0.0.1:{port} answered no login link; restart the meter")
    return data
