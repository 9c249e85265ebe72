"""Demo material: a tiny sample repository, three demo tickets, and a scripted replay for them."""
