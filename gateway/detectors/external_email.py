from __future__ import annotations

from typing import ClassVar


class ExternalEmail:
    name: ClassVar[str] = "external_email"
    kinds: ClassVar[frozenset[str]] = frozenset({"external_email.*"})

    def __init__(self, settings, options) -> None:
        pass

    async def check(self, mail):
        return []
