"""Halton Meter's doctor checks: each module is one plugin registering read-only checks."""
