"""The HTTP control API (aiohttp): health, metrics, destinations, reload and set-state."""
