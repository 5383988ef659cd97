"""deepseek provider plugin (being written)."""
