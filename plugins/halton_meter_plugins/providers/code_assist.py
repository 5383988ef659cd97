"""code_assist provider plugin (being written)."""
