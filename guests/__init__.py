"""Real-mode guest programs built from GNU as sources."""
