"""ASGI app factory: settings -> services -> routers, behind the read hot path."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse

from bastion import __version__
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from bastion.accounts.routes import router as accounts_router
from bastion.advisories.routes import router as advisories_router
from bastion.advisories.app_routes import router as applications_router
from bastion.advisories.osv_api import router as osv_router
from bastion.errors import ServiceError
from bastion.http import error_response
from bastion.insights.routes import router as insights_router
from bastion.packaging.routes import router as packaging_router
from bastion.services import Bastion
from bastion.settings import Settings, load_settings
from bastion.simple.serve import ReadAPI
from bastion.web.account import router as web_account_router
from bastion.web.pages import router as web_pages_router
from bastion.web.review import router as web_review_router
from bastion.web.security import router as web_security_router
from bastion.web.render import STATIC, render_page
from bastion.web.session import CsrfRefused, WebRedirect, WebSessionMiddleware

LANDING = (
    "Bastion package index\n\n"
    "Install:  pip install --index-url {base}/simple/ NAME\n"
    "Upload:   twine upload --repository-url {base}/legacy/ -u __token__ -p TOKEN dist/*\n"
    "API:      {base}/docs (OpenAPI schema at {base}/openapi.json)\n"
)


def create_app(settings: Settings | None = None, *, bastion: Bastion | None = None) -> Any:
    bastion = bastion or Bastion(settings or load_settings())

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any):  # type: ignore[no-untyped-def]
        bastion.start_background()  # periodic tasks (download counts, critical projects) and mail
        try:
            yield
        finally:
            bastion.stop_background()

    api = FastAPI(
        lifespan=lifespan,
        title="Bastion",
        version=__version__,
        description="A self-hostable Python package index built for supply-chain security. "
        "The read API (/simple/, /pypi/, /packages/) follows PEP 503/691/658/700 and PyPI's JSON API.",
    )
    api.state.bastion = bastion
    api.include_router(packaging_router)
    api.include_router(accounts_router)
    api.include_router(advisories_router)
    api.include_router(web_account_router)
    api.include_router(web_pages_router)
    api.include_router(web_review_router)
    api.include_router(web_security_router)
    api.include_router(insights_router)
    api.include_router(osv_router)
    api.include_router(applications_router)
    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    api.add_middleware(WebSessionMiddleware, bastion=bastion)

    @api.exception_handler(WebRedirect)
    async def _web_redirect(request: Request, exc: WebRedirect):  # type: ignore[no-untyped-def]
        response = RedirectResponse(exc.location, status_code=303)
        if exc.flash:
            from urllib.parse import quote

            response.set_cookie("bastion_flash", quote(exc.flash), max_age=60, httponly=True, samesite="lax", path="/")
        return response

    @api.exception_handler(CsrfRefused)
    async def _csrf_refused(request: Request, exc: CsrfRefused):  # type: ignore[no-untyped-def]
        return render_page(request, "message.html", status=403, title="Form refused",
                           error="This form has expired or did not come from this site (CSRF check failed): "
                                 "reload the page and submit it again.")

    @api.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):  # type: ignore[no-untyped-def]
        return error_response(exc, json=request.url.path.startswith("/api/"))

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):  # type: ignore[no-untyped-def]
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', []))}: {err.get('msg')}" for err in exc.errors()
        )
        return error_response(ServiceError(f"Invalid request: {problems}", status=422), json=True)

    @api.get("/", include_in_schema=False)
    def landing(request: Request):  # type: ignore[no-untyped-def]
        base = bastion.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
        if "text/html" in request.headers.get("accept", ""):
            return render_page(request, "home.html", base=base)
        return PlainTextResponse(LANDING.format(base=base))


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
