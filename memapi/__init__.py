"""memapi package."""
