"""The bank over HTTP: ``app.create_app`` (FastAPI routes, errors as 4xx JSON) and ``guard`` (API key, body size)."""
