"""SQLite storage: schema and migrations (`schema`), the single writer thread (`writer`), reads (`queries`)."""
