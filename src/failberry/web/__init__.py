"""The HTTP side: the server (httpserver), /health and /status (health), /metrics (metrics)."""
