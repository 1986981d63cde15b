"""Small helpers shared by every layer (safe names)."""
