"""CPU-bound work moves off the event loop only when it is big enough to matter.

A hop to a worker thread costs more than the work itself for typical mail (a few KB): the hand-off,
the wake-up and the GIL passing back and forth between the loop and the thread. Measured on the
bench mix (5 KB text, 20 KB HTML), the pipeline took 6.0 ms of CPU per message with every step in a
thread and 4.1 ms inline. Big inputs still go to a thread, so that one large message cannot stall
every other session and the per-message time budget can still answer for it.

The size rule fits work whose cost follows its input's length (parsing, text scans). Opening
attachments (archives through `unar`, PDF and Office documents, libmagic and oletools) costs what the
file holds, whatever its size, so that work always goes to a thread (`once`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from gateway.model import Mail

T = TypeVar("T")

INLINE_BYTES = 100_000
"""Work on less input than this (bytes or characters) runs inline on the event loop."""


async def run(size: int, work: Callable[[], T], inline_below: int = INLINE_BYTES) -> T:
    """work() inline when `size` is small, else in a worker thread."""
    if size >= inline_below:
        return await asyncio.to_thread(work)
    return work()


def once(mail: Mail, key: str, size: int, work: Callable[[], T]) -> asyncio.Future[T]:
    """work() on a message, done once and shared by every detector that asks for `key` (the first to
    ask starts it): in a worker thread when the message has attachments to open or `size` is large,
    else right away, with no task (a task and the wake-ups of those waiting on it cost more)."""
    context = mail.context
    future = context.shared(key)
    if future is None:
        if mail.parsed.attachments or size >= INLINE_BYTES:
            future = asyncio.ensure_future(asyncio.to_thread(work))
        else:
            future = asyncio.get_running_loop().create_future()
            try:
                future.set_result(work())
            except Exception as e:          # for every detector that asks: each reports error.<name>
                future.set_exception(e)
        context.share(key, future)
    return future
