from __future__ import annotations

from typing import ClassVar


class SocialLogin:
    name: ClassVar[str] = "social_login"
    kinds: ClassVar[frozenset[str]] = frozenset({"social_login.*"})

    def __init__(self, settings, options) -> None:
        pass

    async def check(self, mail):
        return []
