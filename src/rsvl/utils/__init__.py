"""Small helpers shared across rsvl (atomic file writes, ...)."""
