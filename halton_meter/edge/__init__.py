"""The edge: the process that owns the listening port.

It answers CONNECT and plain-HTTP requests, hands calls to metered hosts to the core, splices everything
else straight to its destination, and records a gap when a metered call cannot go through the core.
"""
