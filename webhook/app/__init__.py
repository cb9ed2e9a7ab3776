"""The HTTP layer: aiohttp handlers, metrics, logs and the server's lifetime."""
