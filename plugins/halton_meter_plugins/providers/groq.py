"""groq provider plugin (being written)."""
