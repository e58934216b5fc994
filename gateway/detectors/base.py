"""The Detector protocol and the option checking every detector uses; the registry (gateway/detectors/
__init__.py) imports the detectors, which import this.

A detector is built once per policy load with the settings and its own `[detectors.<name>]` options
from the policy, and then checks many messages. `check` returns [] when clean and raises when it
could not check; the pipeline turns that into `error.<name>`, never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from gateway.config import Settings
from gateway.model import Finding, Mail


class Detector(Protocol):
    name: ClassVar[str]
    kinds: ClassVar[frozenset[str]]     # what it can report, as globs ("malformed.*"); error.<name> is implied

    # Optional: `rescan: ClassVar[bool] = False` for detectors that judge how a message arrived
    # (sender authentication); a release re-scan keeps their findings from receipt.
    # Optional: `waits: ClassVar[bool] = True` for detectors that wait on something else (clamd, DNS, a
    # child process, a worker thread): they run as concurrent tasks, the others in turn (gateway/pipeline.py).
    # Optional: `prepare()`, one-time work (compiling) that the pipeline runs when it is built, so that
    # the first message does not wait for it.
    # Optional: `shared_lexicon`, a content lexicon (matching/weighted.py) the pipeline scans together
    # with the others in one pass per message (matching/contentscan.py).

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None: ...

    async def check(self, mail: Mail) -> list[Finding]: ...


class OptionError(ValueError):
    """A detector option in the policy that is unknown or has the wrong type."""


def options_with_defaults(name: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Merge policy options over a detector's defaults, refusing unknown keys and wrong types."""
    merged = dict(defaults)
    for key, value in options.items():
        if key not in defaults:
            raise OptionError(f"detector {name!r}: unknown option {key!r} (known: {', '.join(defaults)})")
        expected = type(defaults[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise OptionError(f"detector {name!r}: option {key!r} must be {expected.__name__}")
        merged[key] = value
    return merged
