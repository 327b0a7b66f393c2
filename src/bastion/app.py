"""ASGI app factory: settings -> services -> routers, behind the read hot path."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse

from bastion import __version__
from bastion.accounts.routes import router as accounts_router
from bastion.errors import ServiceError
from bastion.http import error_response
from bastion.packaging.routes import router as packaging_router
from bastion.services import Bastion
from bastion.settings import Settings, load_settings
from bastion.simple.serve import ReadAPI

LANDING = (
    "Bastion package index\n\n"
    "Install:  pip install --index-url {base}/simple/ NAME\n"
    "Upload:   twine upload --repository-url {base}/legacy/ -u __token__ -p TOKEN dist/*\n"
    "API:      {base}/docs (OpenAPI schema at {base}/openapi.json)\n"
)


def create_app(settings: Settings | None = None, *, bastion: Bastion | None = None) -> Any:
    bastion = bastion or Bastion(settings or load_settings())
    api = FastAPI(
        title="Bastion",
        version=__version__,
        description="A self-hostable Python package index built for supply-chain security. "
        "The read API (/simple/, /pypi/, /packages/) follows PEP 503/691/658/700 and PyPI's JSON API.",
    )
    api.state.bastion = bastion
    api.include_router(packaging_router)
    api.include_router(accounts_router)

    @api.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):  # type: ignore[no-untyped-def]
        return error_response(exc, json=request.url.path.startswith("/api/"))

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):  # type: ignore[no-untyped-def]
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', []))}: {err.get('msg')}" for err in exc.errors()
        )
        return error_response(ServiceError(f"Invalid request: {problems}", status=422), json=True)

    @api.get("/", response_class=PlainTextResponse, include_in_schema=False)
    def landing(request: Request) -> str:
        base = str(request.base_url).rstrip("/")
        return LANDING.format(base=base)

    @api.get("/health", summary="Liveness check")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    app = ReadAPI(bastion, api)
    app.fastapi = api  # type: ignore[attr-defined]
    return app


def app_from_env() -> Any:
    """Factory used by ``bastion serve`` (and by uvicorn workers): settings from BASTION_* variables."""
    # `bastion serve` migrated the database already; workers only open it.
    return create_app(bastion=Bastion(load_settings(), run_migrations=False))
