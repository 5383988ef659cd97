"""codex provider plugin (being written)."""
