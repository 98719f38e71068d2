"""The JSON API under /api/: profiles, tag history, segment counts and membership, ad-hoc counts.

The profile is the JSON of `portrait show` (conf/schemas/profile.schema.json),
served from the serving index (index.py) for its date; a restricted role gets
the personal fields as null.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as P
from fastapi.responses import Response

from portrait.explorer.auth import Principal
from portrait.explorer.details import mask_profile

USER_ID = r"^[A-Za-z0-9_-]{1,64}$"
NAME = r"^[a-z0-9_]{1,64}$"
#: Path parameters as validated types: a value off the pattern is refused before any handler (no traversal, no injection).
UserId = Annotated[str, P(pattern=USER_ID)]
Name = Annotated[str, P(pattern=NAME)]


class ProfileFastPath:
    """``GET /api/profile/{user_id}`` with a valid bearer token and no query, answered before FastAPI's routing.

    The hot path of a service: a token check (remembered after its first
    scrypt), one primary-key read of the serving index, the stored JSON sent as
    it is (masked for a role that may not see personal fields). FastAPI's
    routing, parameter validation and dependency solving cost about twice that
    per request; they still answer everything else - no or a bad token (401),
    an unknown user (404), ``?dt=``, a session cookie - through the route below,
    which is the one documented in the OpenAPI schema. Same checks, same body.
    """

    PREFIX = "/api/profile/"
    HEADERS = [(b"content-type", b"application/json")]

    def __init__(self, app, explorer, users):
        self.app, self.explorer, self.users = app, explorer, users
        self.user_id = re.compile(USER_ID)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"] and scope["path"].startswith(self.PREFIX):
            body = self._answer(scope)
            if body is not None:
                await send(
                    {"type": "http.response.start", "status": 200, "headers": [*self.HEADERS, (b"content-length", b"%d" % len(body))]}
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _answer(self, scope) -> bytes | None:
        user_id = scope["path"][len(self.PREFIX) :]
        if not self.user_id.fullmatch(user_id):
            return None
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if header[:7].lower() != b"bearer ":
            return None
        who = self.users.check(header[7:].decode("latin-1").strip())
        if who is None:
            return None
        text = self.explorer.index.profile_json(user_id)
        if text is None:
            return None
        return (text if who.personal else json.dumps(mask_profile(json.loads(text), who), ensure_ascii=False)).encode()


def router(principal) -> APIRouter:
    api = APIRouter(tags=["profiles"])

    @api.get("/profile/{user_id}", summary="A user's master profile (the JSON of `portrait show`)")
    async def profile(request: Request, user_id: UserId, dt: date | None = None, who: Principal = Depends(principal)):
        explorer = request.app.state.explorer
        if dt is None:  # the hot path: one primary-key read of the index, no parsing for a role that sees everything
            text = explorer.index.profile_json(user_id)
            if text is not None:
                body = text if who.personal else json.dumps(mask_profile(json.loads(text), who), ensure_ascii=False)
                return Response(body, media_type="application/json")
        return explorer.profile(user_id, who, dt)

    @api.get("/profile/{user_id}/tags/{column}", summary="One tag of a user over the snapshot dates")
    def tag_history(request: Request, user_id: UserId, column: Name, who: Principal = Depends(principal)):
        return {"user_id": user_id, "tag": column, "history": request.app.state.explorer.history(user_id, column, who)}

    @api.get("/segments", summary="Declared segments and their sizes over dates")
    def segments(request: Request, who: Principal = Depends(principal)):
        return [{**s, "sizes": [{"dt": d.isoformat(), "members": m} for d, m in s["sizes"]]} for s in request.app.state.explorer.segments()]

    @api.get("/segments/{name}/count", summary="Members of a segment on a date (from its bitmap)")
    def segment_count(request: Request, name: Name, dt: date | None = None, who: Principal = Depends(principal)):
        return request.app.state.explorer.segment_count(name, dt)

    @api.get("/segments/{name}/members/{user_id}", summary="Is a user a member of a segment on a date")
    def membership(request: Request, name: Name, user_id: UserId, dt: date | None = None, who: Principal = Depends(principal)):
        return request.app.state.explorer.is_member(name, user_id, dt)

    @api.get("/count", summary="Users matching an ad-hoc rule over the bitmap tags (`segment count --where`)")
    def count(request: Request, where: str = Query(..., max_length=2000), dt: date | None = None, who: Principal = Depends(principal)):
        try:
            return request.app.state.explorer.count_where(where, dt)
        except (ValueError, SyntaxError) as exc:
            raise HTTPException(422, f"bad rule: {exc}") from None

    return api
