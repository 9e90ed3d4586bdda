"""ASGI entry point for uvicorn: ``uvicorn app.asgi:app`` (settings from the environment)."""

from app.lifecycle import catch_early_sighup
from app.main import create_app

# A SIGHUP that arrives while this worker is still loading its models must neither end
# it (the default action) nor be lost: it is noted, and the lifespan reloads once ready.
catch_early_sighup()
app = create_app()
