"""The explorer's server-rendered pages (Jinja templates under templates/), from the abstract to the records."""

from __future__ import annotations

import json
from datetime import date

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as P
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse

from portrait.explorer.api import Name, UserId
from portrait.explorer.auth import Principal
from portrait.explorer.details import NotFound

PLOT = r"^[A-Za-z0-9_.-]{1,128}\.png$"


def router(principal, templates) -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    def page(request: Request, name: str, who: Principal, **context):
        return templates.TemplateResponse(request, name, {"who": who, **context})

    @pages.get("/")
    def home(request: Request, who: Principal = Depends(principal)):
        explorer = request.app.state.explorer
        return page(request, "home.html", who, index=explorer.index.state(), dates=explorer.snapshot_dates())

    @pages.get("/users")
    def search(request: Request, q: str = Query("", max_length=100), who: Principal = Depends(principal)):
        explorer = request.app.state.explorer
        found = explorer.search(q, who) if q.strip() else []
        if len(found) == 1 or any(f["user_id"] == q.strip() for f in found):
            target = q.strip() if any(f["user_id"] == q.strip() for f in found) else found[0]["user_id"]
            return RedirectResponse(request.url_for("user", user_id=target), status_code=303)
        return page(request, "search.html", who, q=q, found=found)

    @pages.get("/users/{user_id}", name="user")
    def user(request: Request, user_id: UserId, dt: date | None = None, who: Principal = Depends(principal)):
        explorer = request.app.state.explorer
        profile = explorer.profile(user_id, who, dt)
        row = explorer.flat_row(user_id, date.fromisoformat(profile["快照日期"]))
        return page(
            request,
            "user.html",
            who,
            user_id=user_id,
            profile=profile,
            profile_text=json.dumps(profile, ensure_ascii=False, indent=2),
            groups=explorer.tag_groups(row, who),
            dt=profile["快照日期"],
            dates=explorer.snapshot_dates(),
        )

    @pages.get("/users/{user_id}/tags/{column}", name="user_tag")
    def user_tag(request: Request, user_id: UserId, column: Name, dt: date | None = None, who: Principal = Depends(principal)):
        detail = request.app.state.explorer.tag_detail(user_id, column, who, dt)
        return page(request, "user_tag.html", who, d=detail)

    @pages.get("/tags")
    def tags(request: Request, who: Principal = Depends(principal)):
        return page(request, "tags.html", who, tags=request.app.state.explorer.monitored_tags())

    @pages.get("/tags/{column}", name="tag")
    def tag(request: Request, column: Name, who: Principal = Depends(principal)):
        return page(request, "tag.html", who, m=request.app.state.explorer.tag_monitoring(column))

    @pages.get("/segments")
    def segments(request: Request, where: str = Query("", max_length=2000), who: Principal = Depends(principal)):
        explorer = request.app.state.explorer
        answer, error = None, None
        if where.strip():
            try:
                answer = explorer.count_where(where)
            except (ValueError, SyntaxError, LookupError) as exc:
                error = str(exc)
        return page(
            request,
            "segments.html",
            who,
            segments=explorer.segments(),
            where=where,
            answer=answer,
            error=error,
            bitmap_tags=explorer.book.bitmap_tags,
        )

    @pages.get("/segments/{name}", name="segment")
    def segment(
        request: Request,
        name: Name,
        dt: date | None = None,
        user_id: str = Query("", pattern=r"^([A-Za-z0-9_-]{1,64})?$"),
        who: Principal = Depends(principal),
    ):
        explorer = request.app.state.explorer
        s = explorer.segment(name, dt)
        lookup = explorer.is_member(name, user_id, s["dt"]) if user_id else None
        return page(request, "segment.html", who, s=s, lookup=lookup)

    @pages.get("/segments/{name}/members.csv", name="segment_export")
    def segment_export(request: Request, name: Name, dt: date | None = None, who: Principal = Depends(principal)):
        ids = request.app.state.explorer.members(name, dt)
        return PlainTextResponse(
            "user_id\n" + "".join(f"{u}\n" for u in ids),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )

    @pages.get("/runs")
    def runs(request: Request, dt: date | None = None, who: Principal = Depends(principal)):
        explorer = request.app.state.explorer
        dates = explorer.run_dates()
        if not dates:
            raise NotFound("no run recorded yet")
        return page(request, "runs.html", who, r=explorer.run(dt or dates[0]), dates=dates)

    @pages.get("/models")
    def models(request: Request, who: Principal = Depends(principal)):
        return page(request, "models.html", who, m=request.app.state.explorer.models())

    @pages.get("/models/plots/{name}", name="plot")
    def plot(request: Request, name: str = P(pattern=PLOT), who: Principal = Depends(principal)):
        return FileResponse(request.app.state.explorer.plot_path(name), media_type="image/png")

    return pages
