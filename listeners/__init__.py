"""listeners package."""
