"""`halton-meter serve`: the supervisor, the loopback API, the runtime file, live stats and config reload."""
