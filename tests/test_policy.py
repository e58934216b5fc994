"""Policy loading, validation errors that name file, rule and line, and rule-table semantics."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config
from gateway.config import SHIPPED_POLICY_DIR
from gateway.model import Action, Direction, Finding
from gateway.policy import PolicyError, load


def settings_with_site(tmp_path: Path, text: str) -> config.Settings:
    site = tmp_path / "site.toml"
    site.write_text(text)
    return config.from_dict({"policy": {"site": str(site)}})


def finding(kind: str) -> Finding:
    return Finding(kind=kind, detector=kind.split(".")[0], detail=f"detail of {kind}")


def test_shipped_policy_loads_and_every_rule_cites_a_provision():
    policy = load(config.Settings())
    text = (SHIPPED_POLICY_DIR / "default.toml").read_text()
    assert "mime" in policy.detectors
    for direction, rules in policy.rules.items():
        assert any(r.matches("error.mime") and r.action is Action.TEMPFAIL for r in rules), direction
        for rule in rules:
            if rule.action in (Action.QUARANTINE, Action.TAG, Action.REJECT):
                assert rule.provision, f"{direction}/{rule.name} cites no provision"
                assert rule.notice, f"{direction}/{rule.name} has no notice"
    assert text.count("Provisions for") >= 3


@pytest.mark.parametrize(("body", "expected"), [
    ('[[outbound.rules]]\nname = "x"\nmatch = ["malformed.*"]\naction = "explode"\n',
     ["site.toml:4", "rule outbound/x", "unknown action 'explode'"]),
    ('\n\n[[inbound.rules]]\nname = "y"\nmatch = ["oversize.mesage"]\naction = "tag"\n',
     ["site.toml:5", "rule inbound/y", "unknown kind 'oversize.mesage'"]),
    ('[[inbound.rules]]\nname = "z"\nmatch = ["nosuch.*"]\naction = "tag"\n',
     ["site.toml:3", "rule inbound/z", "unknown kind 'nosuch.*'"]),
    ('[[internal.rules]]\nname = "w"\nmatch = ["malformed.*"]\naction = "tag"\ncolour = "red"\n',
     ["site.toml:5", "rule internal/w", "unknown key 'colour'"]),
    ('[[internal.rules]]\nname = "v"\nmatch = ["malformed[.*"]\naction = "tag"\n',
     ["site.toml:3", "rule internal/v", "bad kind glob"]),
    ('[detectors]\nenabled = ["mime", "telepathy"]\n', ["site.toml:2", "unknown detector 'telepathy'"]),
    ('[detectors.size]\nmax_message_bytes = "big"\n', ["site.toml", "max_message_bytes"]),
    ('[outbound]\ndefault = "shrug"\n', ["site.toml:2", "unknown action 'shrug'"]),
    ('[outbound]\ndisable = ["nonexistent"]\n', ["site.toml:2", "no rule named 'nonexistent'"]),
    ('[[outbound.rules]]\nname = "n"\nmatch = ["malformed.*"]\naction = "tag"\nnotify = ["everyone"]\n',
     ["site.toml:5", "unknown notify target 'everyone'"]),
    ('[sideways]\nx = 1\n', ["site.toml:1", "unknown section [sideways]"]),
    ('[[outbound.rules]\nname = "broken toml"\n', ["site.toml", "line 1"]),
])
def test_policy_errors_name_file_rule_and_line(tmp_path, body, expected):
    from gateway.pipeline import Pipeline

    settings = settings_with_site(tmp_path, body)
    with pytest.raises(PolicyError) as raised:
        Pipeline(settings, load(settings))      # detector options are validated when detectors are built
    message = str(raised.value)
    for piece in expected:
        assert piece in message, message


def test_lint_command_reports_the_error_with_exit_code_2(tmp_path, capsys):
    from gateway.cli import main

    cfg = tmp_path / "gateway.toml"
    site = tmp_path / "site.toml"
    site.write_text('[[outbound.rules]]\nname = "x"\nmatch = ["virus-ish"]\naction = "deliver"\n')
    cfg.write_text(f'[policy]\nsite = "{site}"\n')
    assert main(["policy", "lint", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{site}:3" in err and "rule outbound/x" in err


def test_first_match_wins_and_tags_accumulate(tmp_path):
    policy = load(settings_with_site(tmp_path, """
[[inbound.rules]]
name = "tag-big"
match = ["oversize.*"]
action = "tag"
tag = "[BIG]"

[[inbound.rules]]
name = "hold-bad"
match = ["malformed.*"]
action = "quarantine"
"""))
    verdict = policy.decide(Direction.INBOUND, [finding("oversize.attachment")])
    assert verdict.action is Action.TAG and verdict.rule == "inbound/tag-big" and verdict.tags == ("[BIG]",)
    verdict = policy.decide(Direction.INBOUND, [finding("oversize.attachment"), finding("malformed.no_boundary")])
    assert verdict.action is Action.QUARANTINE and verdict.rule == "inbound/hold-bad"
    assert verdict.tags == ("[BIG]",) and verdict.tag_rules == ("inbound/tag-big",)
    assert policy.decide(Direction.INBOUND, []).rule == "inbound/default"


def test_site_rule_replaces_shipped_rule_of_same_name_and_disable_removes(tmp_path):
    policy = load(settings_with_site(tmp_path, """
[outbound]
disable = ["oversize-attachment"]

[[inbound.rules]]
name = "malformed"
match = ["malformed.*"]
action = "reject"
reply = "We cannot read this"
"""))
    assert not any(r.name == "oversize-attachment" for r in policy.rules[Direction.OUTBOUND])
    inbound = [r.name for r in policy.rules[Direction.INBOUND]]
    assert inbound.count("malformed") == 1
    verdict = policy.decide(Direction.INBOUND, [finding("malformed.no_boundary")])
    assert verdict.action is Action.REJECT and verdict.reply == "We cannot read this"


def test_monitor_mode_records_without_acting(tmp_path):
    policy = load(settings_with_site(tmp_path, """
[[outbound.rules]]
name = "trial"
match = ["oversize.message"]
action = "reject"
monitor = true
"""))
    verdict = policy.decide(Direction.OUTBOUND, [finding("oversize.message")])
    assert verdict.monitored == ("outbound/trial -> reject",)
    assert verdict.action is Action.TAG      # the shipped oversize rule still applies
    assert verdict.rule == "outbound/oversize-attachment"


def test_detector_error_is_never_a_pass_even_without_a_rule(tmp_path):
    policy = load(settings_with_site(tmp_path, '[outbound]\ndisable = ["detector-error"]\n'))
    verdict = policy.decide(Direction.OUTBOUND, [finding("error.size")])
    assert verdict.action is Action.TEMPFAIL and verdict.rule == "outbound/detector-error"


@pytest.mark.parametrize(("direction", "kind", "rule"), [
    (Direction.OUTBOUND, "unscanned.encrypted", "outbound/unscanned"),
    (Direction.OUTBOUND, "unscanned.text_limits", "outbound/text-unscanned"),
    (Direction.OUTBOUND, "unscanned.ocr_limits", "outbound/images-unscanned"),
    (Direction.INBOUND, "unscanned.scanner_unavailable", "inbound/unscanned"),
    (Direction.INBOUND, "unscanned.text_limits", "inbound/text-unscanned"),
])
def test_each_unscanned_reason_is_explained_by_its_own_rule(direction, kind, rule):
    """A file the virus scanner could not read and text the content detectors could not read are
    different reasons: the notice must give the right one."""
    verdict = load(config.Settings()).decide(direction, [finding(kind)])
    assert verdict.rule == rule
