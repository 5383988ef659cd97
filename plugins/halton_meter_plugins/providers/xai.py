"""xai provider plugin (being written)."""
