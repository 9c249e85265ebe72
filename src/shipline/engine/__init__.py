"""The engine: tickets, routes, the produce/validate loop, and workers that claim steps."""
