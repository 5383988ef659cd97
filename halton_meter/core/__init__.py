"""The capture core: mitmproxy with the meter addon (`addon`), its routing table and its process entry."""
