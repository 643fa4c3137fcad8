"""Holds: reserve credits, capture or release them, expiry."""
