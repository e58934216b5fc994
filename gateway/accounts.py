"""Review accounts: argon2 password hashes and API tokens (stored as SHA-256 of the token, revocable).

Tokens are 256 random bits, so a fast hash is enough to store them safely (unlike passwords, they
cannot be guessed from a dictionary); the token's id prefix lets `gateway users revoke` name it.
A password change and disabling end the account's sessions; a disabled account's tokens are refused
until it is enabled; removing an account deletes its tokens.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.quarantine import ROLES, Store, StoreError, User

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_hasher = PasswordHasher()
# verifying against this when the user does not exist keeps the timing of a failed login the same
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(user: User | None, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash if user else _DUMMY, password) and user is not None \
            and not user.disabled
    except (VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _check_password(password: str) -> None:
    if len(password) < 10:
        raise StoreError("the password must have at least 10 characters")


async def add_user(store: Store, name: str, role: str, password: str) -> None:
    if not NAME.match(name):
        raise StoreError(f"invalid user name {name!r} (letters, digits, . _ @ -; up to 64)")
    if role not in ROLES:
        raise StoreError(f"role must be one of {', '.join(ROLES)}")
    _check_password(password)
    if await store.get_user(name) is not None:
        raise StoreError(f"cannot add user {name!r}: it exists (a new password: `gateway users passwd {name}`)")
    await store.add_user(name, role, hash_password(password))


async def _existing(store: Store, name: str) -> User:
    user = await store.get_user(name)
    if user is None:
        raise StoreError(f"no user {name!r}")
    return user


async def change_password(store: Store, name: str, password: str) -> None:
    """A new password; every session of the account ends."""
    _check_password(password)
    await _existing(store, name)
    if not await store.set_password(name, hash_password(password)):
        raise StoreError(f"no user {name!r}")


async def disable(store: Store, name: str) -> bool:
    """Sessions end and tokens are refused at once; False when it was disabled already."""
    user = await _existing(store, name)
    await store.set_disabled(name, True)
    return not user.disabled


async def enable(store: Store, name: str) -> bool:
    """Logins and the account's unrevoked tokens work again; False when it was enabled already."""
    user = await _existing(store, name)
    await store.set_disabled(name, False)
    return user.disabled


async def remove(store: Store, name: str) -> None:
    """The account and its tokens; a new account of the same name inherits no session or token."""
    if not await store.remove_user(name):
        raise StoreError(f"no user {name!r}")


async def new_token(store: Store, name: str) -> str:
    """A new API token for `name`: printed once, only its hash is kept."""
    if await store.get_user(name) is None:
        raise StoreError(f"no user {name!r}")
    token_id = secrets.token_hex(4)
    token = f"gw_{token_id}_{secrets.token_urlsafe(32)}"
    await store.add_token(token_id, name, token_hash(token))
    return token


async def user_for_token(store: Store, token: str) -> User | None:
    if not token.startswith("gw_") or len(token) > 200:
        return None
    user = await store.user_for_token(token_hash(token))
    return user if user and not user.disabled else None
