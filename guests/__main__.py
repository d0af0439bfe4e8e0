"""`python -m guests build`: assemble every guest (placeholder until the guests land)."""
