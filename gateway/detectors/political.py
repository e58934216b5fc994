from __future__ import annotations

from typing import ClassVar


class Political:
    name: ClassVar[str] = "political"
    kinds: ClassVar[frozenset[str]] = frozenset({"political.*"})

    def __init__(self, settings, options) -> None:
        pass

    async def check(self, mail):
        return []
