"""Helpers shared by every test: throw-away databases, event factories, chain checks."""
