"""The JSON API under /api/: profiles, tag history, segment counts and membership, ad-hoc counts.

The profile is the JSON of `portrait show` (conf/schemas/profile.schema.json),
served from the serving index (index.py) for its date; a restricted role gets
the personal fields as null.
"""

from __future__ import annotations

import json
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
