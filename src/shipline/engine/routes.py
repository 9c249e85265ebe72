"""Routes are data: ticket kind (and optionally lane) → the ordered phases it runs.

`[routes]` in shipline.toml maps a kind to its phases; a key `"KIND.laneN"` overrides the
route for that lane only (e.g. `"feature.lane1" = ["plan", "tests", "implement", "review"]`).
The routes are validated when shipline.toml is loaded (`config.validate_routes`).
"""

from __future__ import annotations

from shipline.config import ROUTE_KEY, Settings
from shipline.errors import TicketError


def route_for(settings: Settings, kind: str, lane: int) -> list[str]:
    """The phases a ticket of this kind and lane runs (pure)."""
    kinds = sorted({m.group("kind") for key in settings.routes if (m := ROUTE_KEY.match(key))})
    if kind not in kinds:
        raise TicketError(f"unknown ticket kind {kind!r} (known: {', '.join(kinds)})")
    return list(settings.routes.get(f"{kind}.lane{lane}") or settings.routes[kind])
