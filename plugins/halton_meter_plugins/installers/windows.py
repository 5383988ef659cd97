"""windows platform installer plugin (being written)."""
