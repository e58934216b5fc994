"""policies/*.toml -> Policy; decide(direction, findings) -> Verdict by an ordered rule table.

Rules are evaluated in order, like a firewall: the first rule whose globs match a finding's kind
decides, except `tag` rules, which add their tag and let evaluation continue, and `monitor` rules,
which only record what they would have done. Loading validates everything and names the file, the
rule and the line of any error, because a policy that half-loads is a policy nobody wrote.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import Settings
from gateway.detectors import REGISTRY
from gateway.model import Action, Direction, Finding, Verdict

RULE_KEYS = {
    "name": str, "match": list, "action": str, "tag": str, "notify": list, "notice": str, "reply": str,
    "provision": str, "monitor": bool, "description": str, "approvals": int, "release_role": str,
}
NOTIFY_TARGETS = {"sender", "recipients", "itsd", "supervisor"}
DIRECTION_KEYS = {"default", "rules", "disable"}
TOP_KEYS = {"detectors", "inbound", "outbound", "internal", "meta"}


class PolicyError(Exception):
    """A policy that cannot be used: the message names the file, the rule and the line."""


@dataclass(frozen=True)
class Rule:
    name: str
    match: tuple[str, ...]
    action: Action
    tag: str = ""
    notify: frozenset[str] = frozenset()
    notice: str = ""
    reply: str = ""
    provision: str = ""
    monitor: bool = False
    description: str = ""
    approvals: int = 1
    release_role: str = "reviewer"
    source: str = ""                 # "policies/default.toml:42"

    def matches(self, kind: str) -> bool:
        return any(fnmatch.fnmatchcase(kind, glob) for glob in self.match)


@dataclass(frozen=True)
class Policy:
    rules: dict[Direction, tuple[Rule, ...]]
    defaults: dict[Direction, Action]
    detectors: tuple[str, ...]
    detector_options: dict[str, dict] = field(default_factory=dict)
    option_sources: dict[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    dir: Path = Path(".")

    def rule(self, qualified: str) -> Rule | None:
        direction, _, name = qualified.partition("/")
        for rule in self.rules.get(Direction(direction), ()) if direction in Direction._value2member_map_ else ():
            if rule.name == name:
                return rule
        return None

    def decide(self, direction: Direction, findings: Iterable[Finding]) -> Verdict:
        findings = tuple(findings)
        kinds = [f.kind for f in findings]
        tags: list[str] = []
        tag_rules: list[str] = []
        notify: set[str] = set()
        monitored: list[str] = []
        for rule in self.rules[direction]:
            if not any(rule.matches(k) for k in kinds):
                continue
            qualified = f"{direction}/{rule.name}"
            if rule.monitor:
                monitored.append(f"{qualified} -> {rule.action}")
                continue
            if rule.action is Action.TAG:
                if rule.tag and rule.tag not in tags:
                    tags.append(rule.tag)
                tag_rules.append(qualified)
                notify |= rule.notify
                continue
            action = rule.action
            errors = [k for k in kinds if k.startswith("error.")]
            if action is Action.DELIVER and any(not rule.matches(k) for k in errors):
                break       # a deliver rule for other findings does not vouch for a check that failed
            if action is Action.DELIVER and tag_rules:
                action = Action.TAG
            return self._verdict(action, rule, qualified, findings, tags, tag_rules, notify, monitored)
        if any(k.startswith("error.") for k in kinds):
            # A detector that failed is never a pass, whatever the policy forgot to say.
            return Verdict(Action.TEMPFAIL, f"{direction}/detector-error", findings, tuple(tags),
                           frozenset(), reply="A content check failed; please try again later",
                           monitored=tuple(monitored), tag_rules=tuple(tag_rules))
        action = self.defaults[direction]
        if action is Action.DELIVER and tag_rules:
            return Verdict(Action.TAG, tag_rules[0], findings, tuple(tags), frozenset(notify),
                           notice=self._notice_of(tag_rules[0]), monitored=tuple(monitored),
                           tag_rules=tuple(tag_rules))
        return Verdict(action, f"{direction}/default", findings, tuple(tags), frozenset(notify),
                       monitored=tuple(monitored), tag_rules=tuple(tag_rules))

    def _notice_of(self, qualified: str) -> str:
        rule = self.rule(qualified)
        return rule.notice if rule else ""

    @staticmethod
    def _verdict(action: Action, rule: Rule, qualified: str, findings: tuple[Finding, ...], tags: list[str],
                 tag_rules: list[str], notify: set[str], monitored: list[str]) -> Verdict:
        return Verdict(action, qualified, findings, tuple(tags), frozenset(notify | rule.notify),
                       notice=rule.notice, reply=rule.reply, monitored=tuple(monitored),
                       tag_rules=tuple(tag_rules),
                       options={"approvals": rule.approvals, "release_role": rule.release_role,
                                "provision": rule.provision})


# --- loading and validation -------------------------------------------------------------------------

def load(settings: Settings) -> Policy:
    """The shipped default.toml from [policy] dir, then the site file over it, validated."""
    policy_dir = Path(settings.policy.dir)
    default_path = policy_dir / "default.toml"
    files = [default_path] + ([Path(settings.policy.site)] if settings.policy.site else [])
    rules: dict[Direction, list[Rule]] = {d: [] for d in Direction}
    defaults = {d: Action.DELIVER for d in Direction}
    detectors: list[str] = []
    options: dict[str, dict] = {}
    option_sources: dict[str, str] = {}
    known = _known_kinds(REGISTRY)
    for path in files:
        doc = _Document.read(path)
        data = doc.data
        for key in data:
            if key not in TOP_KEYS:
                raise PolicyError(f"{doc.where(key)}: unknown section [{key}] (known: {', '.join(sorted(TOP_KEYS))})")
        section = data.get("detectors", {})
        if "enabled" in section:
            detectors = _detector_list(doc, section["enabled"], REGISTRY)
        for name, table in section.items():
            if name == "enabled":
                continue
            if name not in REGISTRY:
                raise PolicyError(f"{doc.where('[detectors.' + name + ']', name)}: unknown detector {name!r} "
                                  f"(known: {', '.join(REGISTRY)})")
            if not isinstance(table, dict):
                raise PolicyError(f"{doc.where(name)}: [detectors.{name}] must be a table")
            options.setdefault(name, {}).update(table)
            option_sources[name] = doc.where(f"[detectors.{name}]", name)
        for direction in Direction:
            table = data.get(direction.value)
            if table is None:
                continue
            _merge_direction(doc, direction, table, rules, defaults, known)
    if not detectors:
        raise PolicyError(f"{default_path}: [detectors] enabled lists no detector")
    return Policy(rules={d: tuple(r) for d, r in rules.items()}, defaults=defaults, detectors=tuple(detectors),
                  detector_options=options, option_sources=option_sources,
                  sources=tuple(str(f) for f in files), dir=policy_dir)


def _detector_list(doc: _Document, value: object, registry: dict) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{doc.where('enabled')}: [detectors] enabled must be a list of names")
    for name in value:
        if name not in registry:
            raise PolicyError(f"{doc.where(name)}: unknown detector {name!r} (known: {', '.join(registry)})")
    return list(dict.fromkeys(value))


def _merge_direction(doc: _Document, direction: Direction, table: object, rules: dict[Direction, list[Rule]],
                     defaults: dict[Direction, Action], known: dict[str, set[str]]) -> None:
    if not isinstance(table, dict):
        raise PolicyError(f"{doc.where(direction.value)}: [{direction}] must be a table")
    for key in table:
        if key not in DIRECTION_KEYS:
            raise PolicyError(f"{doc.where(key)}: [{direction}]: unknown key {key!r} "
                              f"(known: {', '.join(sorted(DIRECTION_KEYS))})")
    if "default" in table:
        defaults[direction] = _action(doc, table["default"], f"[{direction}] default", doc.where("default"))
    current = rules[direction]
    for name in table.get("disable", []):
        if not any(r.name == name for r in current):
            raise PolicyError(f"{doc.where(name)}: [{direction}] disable: no rule named {name!r}")
        current[:] = [r for r in current if r.name != name]
    new_rules: list[Rule] = []
    raw_rules = table.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError(f"{doc.where('rules')}: [{direction}] rules must be an array of tables")
    for index, raw in enumerate(raw_rules):
        rule = _rule(doc, direction, index, raw, known)
        if any(r.name == rule.name for r in new_rules):
            raise PolicyError(f"{rule.source}: rule {direction}/{rule.name}: duplicate rule name")
        new_rules.append(rule)
    # A site rule with a shipped rule's name replaces it in place; new site rules go first.
    replaced = {r.name: r for r in new_rules}
    kept = [replaced.pop(r.name, r) for r in current]
    current[:] = [r for r in new_rules if r.name in replaced] + kept


def _rule(doc: _Document, direction: Direction, index: int, raw: object, known: dict[str, set[str]]) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError(f"{doc.path}: [{direction}] rule {index + 1} must be a table")
    name = raw.get("name")
    line = doc.rule_line(direction.value, index, name if isinstance(name, str) else None)
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
        raise PolicyError(f"{doc.path}:{line}: [{direction}] rule {index + 1}: 'name' must be a lower-case word")
    where = f"{doc.path}:{line}: rule {direction}/{name}"
    for key, value in raw.items():
        if key not in RULE_KEYS:
            raise PolicyError(f"{doc.path}:{doc.key_line(line, key)}: rule {direction}/{name}: unknown key {key!r} "
                              f"(known: {', '.join(sorted(RULE_KEYS))})")
        if not isinstance(value, RULE_KEYS[key]) or (RULE_KEYS[key] is int and isinstance(value, bool)):
            raise PolicyError(f"{doc.path}:{doc.key_line(line, key)}: rule {direction}/{name}: "
                              f"{key!r} must be {RULE_KEYS[key].__name__}")
    for required in ("match", "action"):
        if required not in raw:
            raise PolicyError(f"{where}: missing {required!r}")
    globs = raw["match"]
    if not globs or not all(isinstance(g, str) for g in globs):
        raise PolicyError(f"{where}: 'match' must be a non-empty list of kind globs")
    for glob in globs:
        problem = _glob_problem(glob, known)
        if problem:
            raise PolicyError(f"{doc.path}:{doc.key_line(line, 'match')}: rule {direction}/{name}: {problem}")
    action = _action(doc, raw["action"], f"rule {direction}/{name}", f"{doc.path}:{doc.key_line(line, 'action')}")
    notify = raw.get("notify", [])
    for target in notify:
        if target not in NOTIFY_TARGETS:
            raise PolicyError(f"{doc.path}:{doc.key_line(line, 'notify')}: rule {direction}/{name}: unknown notify "
                              f"target {target!r} (known: {', '.join(sorted(NOTIFY_TARGETS))})")
    for key in ("tag", "reply"):       # a subject prefix and an SMTP reply: a line break would inject
        if any(c in raw.get(key, "") for c in "\r\n\0"):
            raise PolicyError(f"{doc.path}:{doc.key_line(line, key)}: rule {direction}/{name}: {key} must be one line")
    tag = raw.get("tag", "")
    if raw.get("release_role", "reviewer") not in ("reviewer", "admin"):
        raise PolicyError(f"{where}: release_role must be reviewer or admin")
    return Rule(name=name, match=tuple(globs), action=action, tag=tag, notify=frozenset(notify),
                notice=raw.get("notice", ""), reply=raw.get("reply", ""), provision=raw.get("provision", ""),
                monitor=raw.get("monitor", False), description=raw.get("description", ""),
                approvals=raw.get("approvals", 1), release_role=raw.get("release_role", "reviewer"),
                source=f"{doc.path}:{line}")


def _action(doc: _Document, value: object, what: str, where: str) -> Action:
    try:
        return Action(value)
    except ValueError:
        raise PolicyError(f"{where}: {what}: unknown action {value!r} "
                          f"(known: {', '.join(a.value for a in Action)})") from None


def _known_kinds(registry: dict) -> dict[str, set[str]]:
    """category -> the kind patterns the registered detectors declare (error.<name> for each)."""
    known: dict[str, set[str]] = {}
    for name, cls in registry.items():
        for kind in (*cls.kinds, f"error.{name}"):
            known.setdefault(kind.split(".", 1)[0], set()).add(kind)
    return known


def _glob_problem(glob: str, known: dict[str, set[str]]) -> str:
    if not re.fullmatch(r"[a-z0-9_*?.\[\]!-]+", glob) or glob.count("[") != glob.count("]"):
        return f"bad kind glob {glob!r}"
    category = glob.split(".", 1)[0]
    if any(c in category for c in "*?["):
        if any(fnmatch.fnmatchcase(c, category) for c in known):
            return ""
        return f"glob {glob!r} matches no known kind"
    patterns = known.get(category)
    if not patterns:
        return f"unknown kind {glob!r} (known categories: {', '.join(sorted(known))})"
    if any("*" in p for p in patterns):
        return ""
    if any(fnmatch.fnmatchcase(p, glob) for p in patterns):
        return ""
    return f"unknown kind {glob!r} (known: {', '.join(sorted(patterns))})"


@dataclass
class _Document:
    """A TOML file and its text, so that errors can point at lines (tomllib gives no positions)."""

    path: Path
    data: dict
    lines: list[str]

    @classmethod
    def read(cls, path: Path) -> _Document:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise PolicyError(f"{path}: cannot read policy file: {e.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise PolicyError(f"{path}: {e}") from None
        return cls(path, data, text.splitlines())

    def where(self, *needles: str) -> str:
        for needle in needles:
            for number, line in enumerate(self.lines, 1):
                if needle in line and not line.lstrip().startswith("#"):
                    return f"{self.path}:{number}"
        return str(self.path)

    def rule_line(self, direction: str, index: int, name: str | None) -> int:
        if name:
            pattern = re.compile(r"""\bname\s*=\s*["']""" + re.escape(name) + r"""["']""")
            section = ""
            for number, line in enumerate(self.lines, 1):
                header = re.match(r"\s*\[\[?\s*([\w.]+)", line)
                if header:
                    section = header.group(1)
                if section.split(".")[0] == direction and pattern.search(line):
                    return number
        count = -1
        for number, line in enumerate(self.lines, 1):
            if re.match(r"\s*\[\[\s*" + direction + r"\.rules\s*\]\]", line):
                count += 1
                if count == index:
                    return number
        return 1

    def key_line(self, start: int, key: str) -> int:
        for number in range(start, min(start + 40, len(self.lines)) + 1):
            if re.match(r"\s*" + re.escape(key) + r"\s*=", self.lines[number - 1]) or \
                    re.search(r"[{,]\s*" + re.escape(key) + r"\s*=", self.lines[number - 1]):
                return number
        return start
