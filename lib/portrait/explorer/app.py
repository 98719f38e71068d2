"""The explorer's FastAPI application: login, the pages (pages.py) and the JSON API (api.py).

Every route but the login form depends on ``principal``: a session cookie
(people, after the login form) or ``Authorization: Bearer TOKEN`` (services).
Without either a page redirects to /login and an API call answers 401; the
OpenAPI schema is served under /api/openapi.json behind the same check.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from portrait.core.config import Conf
from portrait.explorer import charts
from portrait.explorer.auth import Principal, Sessions, Users
from portrait.explorer.details import MASK, Explorer, NotFound

log = logging.getLogger("portrait.explorer")
COOKIE = "portrait_session"
TEMPLATES = Path(__file__).parent / "templates"


class LoginRequired(Exception):
    """A page asked for without a session: redirect to the login form."""


def points(rows, x, y) -> list[tuple[str, float | None]]:
    """(label, number) pairs for a line chart from rows (dicts or tuples); a non-number is a gap."""
    out = []
    for row in rows:
        value = row[y]
        out.append((str(row[x]), float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None))
    return out


def create_app(lake: str, conf: Conf | None = None) -> FastAPI:
    conf = conf or Conf()
    explorer = Explorer.open(lake, conf)
    users = Users(lake, explorer.settings["roles"])
    sessions = Sessions(float(explorer.settings.get("session_hours", 12)))

    app = FastAPI(title="portrait profile API", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.explorer, app.state.users, app.state.sessions = explorer, users, sessions
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.globals.update(charts=charts, MASK=MASK)
    templates.env.filters["points"] = points
    app.state.templates = templates

    async def principal(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            who = users.check(header[7:].strip())
            if who is not None:
                return who
        else:
            found = sessions.get(request.cookies.get(COOKIE))
            if found is not None:
                who, token_hash = found
                row = users.accounts().get(who.account)
                if row is not None and row.get("hash") == token_hash:  # a removed account or a new token ends the session
                    return who
        if request.url.path.startswith("/api/"):
            raise HTTPException(401, "credentials required: Authorization: Bearer TOKEN", headers={"WWW-Authenticate": "Bearer"})
        raise LoginRequired()

    app.state.principal = principal

    @app.exception_handler(LoginRequired)
    def _login(request: Request, exc: LoginRequired):
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(NotFound)
    def _missing(request: Request, exc: NotFound):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return templates.TemplateResponse(request, "error.html", {"message": str(exc), "who": None}, status_code=404)

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, failed: int = 0):
        return templates.TemplateResponse(request, "login.html", {"failed": bool(failed), "who": None})

    @app.post("/login", include_in_schema=False)
    def login(account: str = Form(...), token: str = Form(...)):
        who = users.check(token)
        if who is None or who.account != account:
            log.warning("explorer: failed login")
            return RedirectResponse("/login?failed=1", status_code=303)
        response = RedirectResponse("/", status_code=303)
        sid = sessions.open(who, users.accounts()[who.account]["hash"])
        response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", max_age=int(sessions.seconds))
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request):
        sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(who: Principal = Depends(principal)):
        return app.openapi()

    from portrait.explorer import api, pages

    app.include_router(api.router(principal), prefix="/api")
    app.add_middleware(api.ProfileFastPath, explorer=explorer, users=users)
    app.include_router(pages.router(principal, templates))
    return app
