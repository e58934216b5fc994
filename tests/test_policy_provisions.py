"""Every rule of the shipped policy cites provisions by the real section headings of the department's policy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway import config
from gateway.policy import load as load_policy

POLICY_TEXT = next((p / "shared" / "policy" / "department-internet-policy.txt"
                    for p in Path(__file__).resolve().parents
                    if (p / "shared" / "policy" / "department-internet-policy.txt").is_file()), None)


def shipped_rules() -> list:
    policy = load_policy(config.from_dict({}, source="<test>"))
    return [rule for rules in policy.rules.values() for rule in rules]


def section_headings(text: str) -> set[str]:
    """The policy's headings: short lines standing alone, with or without a closing colon."""
    headings = set()
    for line in text.splitlines():
        line = line.strip()
        if line and len(line) < 80 and not line.endswith(".") and line[0].isupper():
            headings.add(line.rstrip(":").strip())
    return headings


@pytest.mark.skipif(POLICY_TEXT is None, reason="the department's policy (shared/policy) is not beside the checkout")
def test_every_provision_is_a_real_section_heading():
    headings = section_headings(POLICY_TEXT.read_text())
    assert {"Policy", "Provisions for Publishing and Posting", "Provisions for Security"} <= headings
    cited = [(rule.name, name.strip()) for rule in shipped_rules() if rule.provision
             for name in rule.provision.split(";")]
    assert cited
    wrong = [(rule, name) for rule, name in cited if name not in headings]
    assert not wrong, f"provisions that are not section headings of the policy: {wrong}"


@pytest.mark.parametrize("category, section", [
    ("commercial", "Provisions for Publishing and Posting"), ("political", "Provisions for Publishing and Posting"),
    ("chain_letter", "Provisions for Publishing and Posting"), ("abusive", "Provisions for Publishing and Posting"),
    ("external_email", "Policy"), ("social_login", "Policy"),
])
def test_content_rules_cite_the_section_that_says_it(category, section):
    rules = [r for r in shipped_rules() if any(m.startswith(category) for m in r.match)]
    assert rules
    for rule in rules:
        assert rule.provision == section, (rule.name, rule.provision)
        if rule.notice:
            cited = re.findall(r"\(([^()]*)\)\.?$", rule.notice)
            assert cited and cited[0].split(":")[0] == section, rule.notice
