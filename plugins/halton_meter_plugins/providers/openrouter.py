"""openrouter provider plugin (being written)."""
