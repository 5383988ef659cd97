"""`halton-meter doctor`: runs every registered check and renders the verdict."""
