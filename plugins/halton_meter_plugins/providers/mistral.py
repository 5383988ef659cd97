"""mistral provider plugin (being written)."""
