"""gemini provider plugin (being written)."""
