"""launchd platform installer plugin (being written)."""
