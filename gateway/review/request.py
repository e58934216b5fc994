"""The sender's release-request page: reached from the signed, expiring link in their notice.

No account and no login: the link's token (gateway/notify/tokens.py) names the held message and the
address it was sent to, and only that message's sender is served. The page shows why the message
was held (the rule's notice, the findings with their masked evidence; never the body) and offers a
release request with a business justification, or withdrawal. The form carries a CSRF token that
must match a signed, SameSite=Strict cookie set with the page. Every view and action is audited
under the sender's address.
"""

from __future__ import annotations

import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from gateway.notify.tokens import read_token
from gateway.release import Refused
from gateway.review.auth import Authenticator
from gateway.review.pages import client_address as _client
from gateway.review.pages import ctx, page

FORM_COOKIE = "gw_request"
MAX_TOKEN = 1024


def _forms(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="gateway-release-request-form")


async def request_page(request: Request) -> Response:
    c = ctx(request)
    token = request.path_params["token"]
    days = c.settings.notify.link_days
    found = read_token(c.link_secret, token, days * 86400) if len(token) <= MAX_TOKEN else None
    item = await c.store.get(found[0], with_raw=False) if found else None
    if item is None or found is None or item.mail_from.lower() != found[1]:
        return page(request, "error.html", None, 404, message="This link is not valid or has expired. If your "
                    "message is still held, contact ITSD and quote the quarantine id from the notice.")
    address = found[1]
    forms = _forms(c.link_secret)
    try:
        csrf = str(forms.loads(request.cookies.get(FORM_COOKIE, ""), max_age=3600))
        new_cookie = None
    except BadSignature:
        csrf = secrets.token_urlsafe(32)
        new_cookie = forms.dumps(csrf)
    status, done = 200, ""
    if request.method == "POST":
        form = await request.form(max_files=0, max_fields=10)
        if not Authenticator.csrf_ok(csrf if new_cookie is None else "", form.get("csrf")):
            status, done = 403, "The form expired or did not come from this page; reload the page and try again."
        else:
            try:
                if form.get("action") == "withdraw":
                    await c.service.withdraw(item.id, address)
                    done = "Your message was withdrawn: it will not be delivered."
                else:
                    await c.service.request(item.id, address, str(form.get("justification", ""))[:4000])
                    done = "Your request was sent to ITSD. You will be told of their decision by e-mail."
            except Refused as e:
                status, done = e.status, str(e)
        item = await c.store.get(item.id, with_raw=False) or item
    else:
        await c.store.audit(address, "request-page-view", item.id, "", {"client": _client(request)})
    response = page(request, "request.html", None, status, item=item, address=address, form_csrf=csrf,
                    done=done, ok=status == 200, release_request=await c.store.release_request(item.id),
                    notice=item.extra.get("notice", ""), provision=item.extra.get("provision", ""))
    response.headers["Referrer-Policy"] = "no-referrer"          # the token stays out of Referer headers
    if new_cookie:
        c.auth.set_cookie(response, FORM_COOKIE, new_cookie, 3600)
    return response
