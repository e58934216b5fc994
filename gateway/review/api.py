"""The JSON API under /api/, for scripts: bearer tokens (`gateway users token NAME`) or the browser
session (then POSTs need the X-CSRF-Token header). 401 without valid credentials, 403 when the
role may not; the same release service, role checks and audit rows as the pages."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.findinggroups import grouped
from gateway.quarantine import HeldItem, Query
from gateway.release import Refused
from gateway.review.auth import Auth

MAX_BODY = 64 * 1024


def error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="gateway"'} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def authenticate(request: Request) -> Auth | JSONResponse:
    c = request.app.state.ctx
    bearer = await c.auth.from_bearer(request)
    if bearer is False:
        return error(401, "invalid or revoked token")
    if bearer is not None:
        return bearer
    session = await c.auth.from_session(request)
    if session is None:
        return error(401, "authentication required (Authorization: Bearer TOKEN, or a review session)")
    return session


def detail(item: HeldItem) -> dict[str, object]:
    """The fields of `gateway quarantine show --json`, plus the release state."""
    return {**item.summary(), "client_address": item.client_address, "helo": item.helo, "sha256": item.sha256,
            "findings": [f.as_dict() for f in item.findings],
            "rescan_findings": [f.as_dict() for f in item.rescan_findings],
            "finding_groups": [g.as_dict() for g in grouped(item.recorded_findings)],
"virus_names": list(item.virus_names),
            "notice": item.extra.get("notice", ""),
            "error": item.error, "released_to": list(item.released_to), "decided_by": item.decided_by,
            "approvals_required": item.approvals_required, "release_role": item.release_role}


async def detail_with_request(store, item: HeldItem) -> dict[str, object]:
    request = await store.release_request(item.id)
    return {**detail(item), "release_request": None if request is None else {
        "address": request.address, "justification": request.justification, "at": request.at,
        "answered_at": request.answered_at, "answered_by": request.answered_by, "answer": request.answer}}


async def held_list(request: Request) -> JSONResponse:
    auth = await authenticate(request)
    if isinstance(auth, JSONResponse):
        return auth
    try:
        query = Query.from_params(dict(request.query_params), limit=100)
    except ValueError as e:
        return error(400, str(e))
    page = await request.app.state.ctx.store.query(query)
    return JSONResponse({"items": [i.summary() for i in page.items], "total": page.total,
                         "offset": query.offset, "limit": query.limit})


async def held_one(request: Request) -> JSONResponse:
    auth = await authenticate(request)
    if isinstance(auth, JSONResponse):
        return auth
    item = await request.app.state.ctx.store.get(request.path_params["id"][:64], with_raw=False)
    if item is None:
        return error(404, "no such held message")
    return JSONResponse(await detail_with_request(request.app.state.ctx.store, item))


async def held_action(request: Request) -> JSONResponse:
    auth = await authenticate(request)
    if isinstance(auth, JSONResponse):
        return auth
    c = request.app.state.ctx
    if auth.via == "session" and not c.auth.csrf_ok(auth.csrf, request.headers.get("x-csrf-token")):
        return error(403, "CSRF token missing or wrong (send X-CSRF-Token with a session)")
    action = request.path_params["action"]
    if action not in ("release", "delete"):
        return error(404, "no such action")
    body = await request.body()
    if len(body) > MAX_BODY:
        return error(413, "request body too large")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return error(400, "the body must be JSON: {\"reason\": \"...\"}")
    if not isinstance(data, dict) or not isinstance(data.get("reason", ""), str):
        return error(400, "the body must be a JSON object with a string reason")
    if not isinstance(data.get("confirm", ""), str):
        return error(422, "confirm must be a string: the virus's signature name")
    rcpts = data.get("rcpts")
    if rcpts is not None and (not isinstance(rcpts, list) or not all(isinstance(r, str) for r in rcpts)):
        return error(400, "rcpts must be a list of addresses")
    item_id = request.path_params["id"][:64]
    try:
        if action == "release":
            outcome = await c.service.release(item_id, auth.user, data.get("reason", ""), rcpts or None,
                                              confirm=data.get("confirm", ""))
        else:
            outcome = await c.service.delete(item_id, auth.user, data.get("reason", ""))
    except Refused as e:
        return error(e.status, str(e))
    status = 200
    if outcome.status == "failed":     # stopped by the re-scan: 409; the next hop refused: 502
        status = 409 if outcome.stopped else 502
    return JSONResponse(outcome.as_dict(), status_code=status)


async def notices(request: Request) -> JSONResponse:
    """GET /api/notices: the notifier's outbox counts (pending, failing, failed, alert), for monitoring."""
    auth = await authenticate(request)
    if isinstance(auth, JSONResponse):
        return auth
    c = request.app.state.ctx
    return JSONResponse(await c.store.outbox_stats(c.settings.notify.alert_after))
