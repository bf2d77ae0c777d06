"""The ``pfmvg rate`` web app (aiohttp + Jinja2 with autoescape; both imported only here).

Pages: ``/`` login (a name, plus the access token when the server has one), ``/item/<n>`` the n-th item of the
rater's blinded queue, ``/done``, ``/admin?key=...`` (who has rated what; the key is printed at start). API:
``POST /api/rate`` saves one answer (committed before the reply), ``GET /image/<n>`` the n-th item's image as PNG.
Readers never send paths: images are looked up from the samples by queue position, and only files inside a prepared
dataset's image root are ever read. Everything a model or a reader wrote is escaped by the templates (autoescape)
and the page loads no inline script (Content-Security-Policy ``script-src 'self'``).
"""

from __future__ import annotations

import asyncio
import hmac
import io
import ipaddress
import math
import secrets
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from pfmvg_plugin.data.images import load_image
from pfmvg_plugin.rate.db import RatingsDB
from pfmvg_plugin.rate.items import Item, Scale
from pfmvg_plugin.rate.queue import Slot, rater_queue

HERE = Path(__file__).resolve().parent
COOKIE = "pfmvg_rate_session"
MAX_NAME = 64
MAX_COMMENT = 5000
_IMAGE_CACHE = 64
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    """What ``pfmvg rate serve`` was started with."""

    items: list[Item]
    scales: dict[str, Scale]
    db_path: Path
    host: str = "127.0.0.1"
    token: str | None = None  # access token every reader must give at login (required off loopback)
    review: bool = False  # unblinded: model names and ground-truth boxes shown
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(16))


class RateApp:
    """State shared by the handlers: the items, each rater's queue, the database, an image cache."""

    def __init__(self, settings: Settings):
        if not is_loopback(settings.host) and not settings.token:
            raise ValueError(f"--host {settings.host} listens beyond this machine: give an access token "
                             "(--token-env VAR) that every reader must enter, or use --host 127.0.0.1")
        self.settings = settings
        self.db = RatingsDB(settings.db_path)
        self._queues: dict[str, list[Slot]] = {}
        self._images: OrderedDict[Path, bytes] = OrderedDict()
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                                      undefined=jinja2.StrictUndefined)
        self.env.filters["utc"] = _utc
        self.totals = Counter(i.model for i in settings.items)

    def queue(self, rater: str) -> list[Slot]:
        if rater not in self._queues:
            self._queues[rater] = rater_queue(self.settings.items, rater)
        return self._queues[rater]

    def render(self, template: str, status: int = 200, **context) -> web.Response:
        html = self.env.get_template(template).render(review=self.settings.review, **context)
        return web.Response(text=html, content_type="text/html", status=status)

    def rater_of(self, request: web.Request) -> str | None:
        return self.db.session_rater(request.cookies.get(COOKIE))

    def first_open(self, rater: str) -> int | None:
        """Position of the first item ``rater`` has not rated yet (resume point), or None when all are rated."""
        done = {k for k, r in self.db.of_rater(rater).items() if r.rating is not None}
        return next((n for n, slot in enumerate(self.queue(rater)) if slot.item.key not in done), None)

    async def png(self, path: Path) -> bytes:
        """The image as PNG (DICOM windowed by its header), converted once and kept in a small cache."""
        if path in self._images:
            self._images.move_to_end(path)
            return self._images[path]

        def convert() -> bytes:
            buf = io.BytesIO()
            load_image(path, mode="L" if path.suffix.lower() in (".dcm", ".dicom") else "RGB").save(buf, "PNG")
            return buf.getvalue()

        data = await asyncio.get_running_loop().run_in_executor(None, convert)
        self._images[path] = data
        while len(self._images) > _IMAGE_CACHE:
            self._images.popitem(last=False)
        return data


def _utc(when: float | None) -> str:
    return "-" if when is None else datetime.fromtimestamp(when, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


APP_KEY = web.AppKey("rate", RateApp)


def _state(request: web.Request) -> RateApp:
    return request.app[APP_KEY]


@web.middleware
async def guard(request: web.Request, handler):
    """Security headers on every answer; on loopback, requests for another host name are refused (DNS rebinding);
    a POST from a page of another origin is refused (the session cookie is SameSite=Strict; this covers sign-in)."""
    state = _state(request)
    if is_loopback(state.settings.host):
        name = request.url.host or ""
        if name and not (is_loopback(name) or name == state.settings.host):
            return web.Response(status=403, text="unexpected Host header")
    origin = request.headers.get("Origin")
    if request.method == "POST" and origin and origin != "null" and urlsplit(origin).netloc != request.host:
        return web.Response(status=403, text="cross-site request refused")  # e.g. a page elsewhere signing you in
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _need_rater(request: web.Request) -> str:
    rater = _state(request).rater_of(request)
    if rater is None:
        raise web.HTTPFound("/")
    return rater


def _slot(request: web.Request, rater: str, raw: object = None) -> tuple[int, Slot]:
    """The queue position given in the URL (or ``raw``) and its slot; 404 when there is none."""
    queue = _state(request).queue(rater)
    try:
        pos = int(request.match_info["pos"] if raw is None else raw)
    except (TypeError, ValueError):
        raise web.HTTPNotFound() from None
    if not 0 <= pos < len(queue):
        raise web.HTTPNotFound(text=f"no item {pos}: the queue has {len(queue)}")
    return pos, queue[pos]


async def index(request: web.Request) -> web.Response:
    state = _state(request)
    rater = state.rater_of(request)
    if rater is None:
        return state.render("login.html", needs_token=bool(state.settings.token), error=None)
    pos = state.first_open(rater)
    raise web.HTTPFound("/done" if pos is None else f"/item/{pos}")


async def login(request: web.Request) -> web.Response:
    state = _state(request)
    form = await request.post()
    name = " ".join(str(form.get("name", "")).split())
    token = str(form.get("token", ""))
    error = None
    if not name or len(name) > MAX_NAME:
        error = f"Enter your name (1 to {MAX_NAME} characters)."
    elif state.settings.token and not hmac.compare_digest(token.encode(), state.settings.token.encode()):
        error = "Wrong access token."
    if error:
        return state.render("login.html", status=403 if "token" in error else 400,
                            needs_token=bool(state.settings.token), error=error)
    response = web.HTTPFound("/")
    response.set_cookie(COOKIE, state.db.new_session(name), httponly=True, samesite="Strict", path="/")
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPFound("/")
    response.del_cookie(COOKIE, path="/")
    raise response


def _progress(state: RateApp, rater: str) -> dict:
    return {"rated": state.db.count(rater), "total": len(state.settings.items)}


async def item_page(request: web.Request) -> web.Response:
    state = _state(request)
    rater = _need_rater(request)
    pos, slot = _slot(request, rater)
    item = slot.item
    saved = state.db.get(rater, item.key)
    queue = state.queue(rater)
    studies = list(dict.fromkeys(s.item.study for s in queue))
    data = {
        "pos": pos, "last": len(queue) - 1, "kind": item.kind,
        "width": item.width, "height": item.height,
        "pred_boxes": item.pred_boxes, "gt_boxes": item.gt_boxes if state.settings.review else [],
        "rating": saved.rating if saved else None, "box": saved.box if saved else None,
        "has_image": item.image is not None,
    }
    scale = state.settings.scales.get(item.kind, state.settings.scales["report"])
    return state.render("item.html", rater=rater, pos=pos, slot=slot, item=item, scale=scale, data=data,
                        comment=saved.comment if saved else "", progress=_progress(state, rater),
                        study_number=studies.index(item.study) + 1, studies=len(studies))


async def done_page(request: web.Request) -> web.Response:
    state = _state(request)
    rater = _need_rater(request)
    return state.render("done.html", rater=rater, progress=_progress(state, rater),
                        last=len(state.queue(rater)) - 1)


async def image(request: web.Request) -> web.Response:
    state = _state(request)
    rater = state.rater_of(request)
    if rater is None:
        raise web.HTTPForbidden()
    _, slot = _slot(request, rater)
    if slot.item.image is None:
        raise web.HTTPNotFound(text=slot.item.image_problem or "no image")
    return web.Response(body=await state.png(slot.item.image), content_type="image/png")


def _box(raw: object, item: Item) -> list[float] | None:
    """A corrected box from the client: four finite numbers, ordered, clipped to the image, rounded to 0.01 px."""
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 4:
        raise web.HTTPBadRequest(text="box must be [x1, y1, x2, y2]")
    try:
        x1, y1, x2, y2 = (float(v) for v in raw)
    except (TypeError, ValueError):
        raise web.HTTPBadRequest(text="box must hold four numbers") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise web.HTTPBadRequest(text="box must hold finite numbers")
    x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
    if item.width and item.height:
        x1, x2 = (min(max(v, 0.0), float(item.width)) for v in (x1, x2))
        y1, y2 = (min(max(v, 0.0), float(item.height)) for v in (y1, y2))
    return [round(v, 2) for v in (x1, y1, x2, y2)]


async def api_rate(request: web.Request) -> web.Response:
    state = _state(request)
    rater = state.rater_of(request)
    if rater is None:
        return web.json_response({"error": "not logged in"}, status=401)
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "body must be a JSON object"}, status=400)
    if isinstance(body.get("pos"), bool) or not isinstance(body.get("pos"), int):
        return web.json_response({"error": "pos must be the item's queue position"}, status=400)
    try:
        _, slot = _slot(request, rater, body["pos"])
        box = _box(body.get("box"), slot.item)
    except web.HTTPException as exc:
        return web.json_response({"error": exc.text or exc.reason}, status=exc.status)
    rating = body.get("rating")
    if rating is not None and (isinstance(rating, bool) or rating not in (1, 2, 3, 4, 5)):
        return web.json_response({"error": "rating must be an integer from 1 to 5 or null"}, status=400)
    comment = body.get("comment") or ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        return web.json_response({"error": f"comment must be text of at most {MAX_COMMENT} characters"}, status=400)
    item = slot.item
    state.db.save(rater, item.key, item.task, item.model, item.id, rating, comment, box)
    return web.json_response({"saved": True, "box": box, "progress": _progress(state, rater)})


async def admin(request: web.Request) -> web.Response:
    state = _state(request)
    if not hmac.compare_digest(str(request.query.get("key", "")).encode(), state.settings.admin_key.encode()):
        raise web.HTTPForbidden(text="admin page: open the URL `pfmvg rate serve` printed at start")
    rows = [r for r in state.db.all() if r.rating is not None]
    raters = sorted({r.rater for r in state.db.all()})
    models = sorted(state.totals)
    by = Counter((r.rater, r.model) for r in rows)
    table = [{"rater": rater, "cells": [by[(rater, m)] for m in models],
              "rated": sum(by[(rater, m)] for m in models),
              "last": max((r.updated_at for r in rows if r.rater == rater), default=None)} for rater in raters]
    per_model = [{"model": m, "items": state.totals[m], "ratings": sum(by[(r, m)] for r in raters)} for m in models]
    recent = sorted(rows, key=lambda r: r.updated_at, reverse=True)[:50]
    return state.render("admin.html", table=table, models=models, totals=[state.totals[m] for m in models],
                        per_model=per_model, recent=recent, items=len(state.settings.items), db=state.settings.db_path)


async def _no_content() -> web.Response:
    return web.Response(status=204)


def build_app(settings: Settings) -> web.Application:
    """The aiohttp application for ``settings`` (the database is opened now, closed on cleanup)."""
    state = RateApp(settings)
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[APP_KEY] = state
    app.router.add_get("/", index)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/item/{pos}", item_page)
    app.router.add_get("/done", done_page)
    app.router.add_get("/image/{pos}", image)
    app.router.add_post("/api/rate", api_rate)
    app.router.add_get("/admin", admin)
    app.router.add_get("/favicon.ico", lambda _request: _no_content())
    app.router.add_static("/static", HERE / "static", follow_symlinks=False)

    async def close(_app: web.Application) -> None:
        state.db.close()

    app.on_cleanup.append(close)
    return app
