"""Built-in provider plugins, one module per provider. `_common` holds the shared parser skeleton."""
