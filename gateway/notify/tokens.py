"""Signed, expiring links for the sender's release-request page (no account needed)."""

from __future__ import annotations

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

SALT = "gateway.release-request"


def make_token(secret: str, item_id: str, address: str) -> str:
    return URLSafeTimedSerializer(secret, salt=SALT).dumps({"id": item_id, "to": address.lower()})


def read_token(secret: str, token: str, max_age_seconds: int) -> tuple[str, str] | None:
    """(item id, address) for a valid, unexpired token; None otherwise."""
    try:
        data = URLSafeTimedSerializer(secret, salt=SALT).loads(token, max_age=max_age_seconds)
    except (BadSignature, SignatureExpired):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("to"), str):
        return None
    return data["id"], data["to"]
