"""Probing services through routes, and saying why a route fails."""
