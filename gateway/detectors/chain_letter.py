from __future__ import annotations

from typing import ClassVar


class ChainLetter:
    name: ClassVar[str] = "chain_letter"
    kinds: ClassVar[frozenset[str]] = frozenset({"chain_letter.*"})

    def __init__(self, settings, options) -> None:
        pass

    async def check(self, mail):
        return []
