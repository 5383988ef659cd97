"""Placeholder until the provider lands."""
