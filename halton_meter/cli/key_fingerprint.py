from __future__ import annotations

import sys

import click

from halton_meter.config import load_config


@click.command("key-fingerprint")
def command() -> None:
    """Print the fingerprint the meter records for an API key read from standard input.

    Reports show keys only by this fingerprint (a keyed hash: it cannot be turned back into the key, and it
    differs between machines). To show a name instead, add it to config.toml:

    \b
        [keys]
        "3f9a1c2e" = "team key"

    Example: halton-meter key-fingerprint < ~/.secrets/anthropic-key   (or paste the key and press Ctrl-D)
    """
    from halton_meter.attribution.keys import fingerprint, key_label, load_secret

    config = load_config()
    if sys.stdin.isatty():
        click.echo("Paste the key, then press Enter and Ctrl-D:", err=True)
    text = sys.stdin.read(64 * 1024).strip()
    if not text or "\n" in text:
        raise click.UsageError("give exactly one key on standard input, e.g. halton-meter key-fingerprint < keyfile")
    credential = text.partition(" ")[2].strip() if text.lower().startswith(("bearer ", "basic ", "token ")) else text
    secret = load_secret(config.paths.home, create=config.paths.home.is_dir())
    if secret is None:
        raise click.UsageError("no fingerprint key yet: run `halton-meter init` (or start the meter) first")
    fp = fingerprint(secret, credential)
    click.echo(key_label(fp, config.key_names) or fp)
