"""`gateway evaluate` over a small labelled corpus, and the content rules end to end through the gateway."""

from __future__ import annotations

import asyncio
import json

from gateway import cli, evaluate
from tests.support import contentmail as cm
from tests.support.paths import DATA
from tests.support.peers import send

SSN_FORM = "New hire: Jane Roe\nSocial security number: 536-22-8726\n"


def write_corpus(folder) -> None:
    items = {
        "confidential/c1.eml": ("confidential", cm.message("PRE-DECISIONAL DRAFT\n\nFee options.", subject="Fees")),
        "confidential/c2.eml": ("confidential", cm.message("Thanks.", subject="Attorney work product: claim")),
        "confidential/c3.eml": ("confidential", cm.message("The usual numbers.", subject="numbers")),   # a miss
        "pii/p1.eml": ("pii", cm.message(SSN_FORM)),
        "ham/h1.eml": ("ham", cm.message("Lunch on Tuesday?", subject="lunch")),
        "ham/h2.eml": ("ham", cm.message("Internal use only\n\nThe agenda.", subject="agenda")),     # a false alarm
        "ham/h3.eml": ("ham", cm.message("Public notice of a closed meeting.", subject="notice")),
        "malformed/m1.eml": ("malformed", b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"),
    }
    lines = ["path\tlabel\tsource"]
    for path, (label, raw) in items.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(raw)
        lines.append(f"{path}\t{label}\ttest")
    (folder / "manifest.tsv").write_text("\n".join(lines) + "\n")


def test_evaluate_reports_precision_recall_f1_ham_false_positives_and_time(tmp_path, capsys):
    write_corpus(tmp_path)
    assert cli.main(["evaluate", "--json", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 8 and summary["labels"]["ham"] == 3
    conf = summary["categories"]["confidential"]
    assert (conf["tp"], conf["fp"], conf["fn"]) == (2, 1, 1)
    assert conf["precision"] == round(2 / 3, 4) and conf["recall"] == round(2 / 3, 4)
    assert conf["f1"] == round(2 / 3, 4)
    assert summary["categories"]["pii"] == {"items": 1, "tp": 1, "fp": 0, "fn": 0, "precision": 1.0,
                                            "recall": 1.0, "f1": 1.0}
    assert summary["ham"] == {"items": 3, "flagged": 1, "false_positive_rate": round(1 / 3, 4)}
    assert summary["time_ms"]["median"] > 0 and summary["time_ms"]["p99"] >= summary["time_ms"]["median"]
    assert "confidential" in summary["detector_median_ms"]


def test_evaluate_text_report_and_mistakes(tmp_path, capsys):
    write_corpus(tmp_path)
    assert cli.main(["evaluate", "--mistakes", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "confidential        3     2     1     1     0.667   0.667  0.667" in out
    assert "ham: 1 of 3 not delivered (false-positive rate 33.33 %)" in out
    assert "ham/h2.eml: label ham, predicted confidential, quarantine by outbound/confidential" in out
    assert "confidential/c3.eml: label confidential, predicted -, deliver by outbound/default" in out


def test_evaluate_without_manifest_is_an_error(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    assert "no manifest.tsv" in capsys.readouterr().err


async def test_outbound_pii_is_held_in_the_quarantine_not_relayed(gw, sink):
    code, text, _ = await send(gw.port, "alice@example.gov", ["payroll@example.org"], cm.message(SSN_FORM))
    assert code == 250, text
    await asyncio.sleep(0.05)
    assert sink.messages == []
    [item] = await gw.store.list()
    assert item.rule == "outbound/pii"
    assert item.kinds == ("pii.ssn",)
    stored = await gw.store.get(item.id, with_raw=False)
    [finding] = stored.findings
    assert finding.evidence == ("SSN ***-**-8726",)
    assert "high confidence" in finding.detail


async def test_outbound_confidential_attachment_is_held(gw, sink):
    docx = cm.docx(["Options for the new fee schedule."], header="PRE-DECISIONAL")
    raw = cm.message("For your comments.", attachments=(("fees.docx", "application/octet-stream", docx),))
    code, _, _ = await send(gw.port, "alice@example.gov", ["consultant@example.org"], raw)
    assert code == 250
    await asyncio.sleep(0.05)
    assert sink.messages == []
    [item] = await gw.store.list()
    assert item.rule == "outbound/confidential"


async def test_internal_password_is_tagged_and_delivered(gw, sink):
    raw = cm.message("Username: kjones\nPassword: Blue!Harbor77\n", subject="VPN", to="bob@example.gov")
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.gov"], raw)
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"Subject: [Password shared] VPN" in got.data
    assert b"X-Gateway-Verdict: tag; rule=internal/credentials" in got.data
    assert b"Blue!Harbor77" in got.data            # delivered as sent, only tagged
    findings_header = got.data.split(b"X-Gateway-Findings: ", 1)[1].split(b"\r\n", 1)[0]
    assert b"credentials.password" in findings_header and b"Blue!Harbor77" not in findings_header


async def test_outbound_clean_mail_with_a_signature_and_disclaimer_is_delivered(gw, sink):
    body = ("The permit was approved.\n\n--\nJane Doe\n(573) 555-0142\n301 W High St\n\nThis e-mail may contain "
            "confidential information. If you are not the intended recipient, please delete it.\n")
    code, _, _ = await send(gw.port, "alice@example.gov", ["applicant@example.org"], cm.message(body))
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"X-Gateway-Verdict: deliver\r\n" in got.data


# --- per source, per direction, held apart from tagged ----------------------------------------------------

def write_layout(folder) -> None:
    """A corpus without a manifest: `<label>/<source>-<id>.eml`, two sources of ham."""
    items = {
        "confidential/enron-1.eml": cm.message("PRE-DECISIONAL DRAFT\n\nFee options.", subject="Fees"),
        "pii/presidio-1.eml": cm.message(SSN_FORM),
        "ham/enron-2.eml": cm.message("Internal use only\n\nThe agenda.", subject="agenda"),      # a false alarm
        "ham/spamassassin-easyham2-00001.eml": cm.message("Lunch on Tuesday?", subject="lunch"),
    }
    for path, raw in items.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(raw)


def test_evaluate_reports_each_source_of_a_folder_without_a_manifest(tmp_path, capsys):
    write_layout(tmp_path)
    assert cli.main(["evaluate", "--json", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 4 and summary["direction"] == "outbound"
    assert sorted(summary["sources"]) == ["enron", "presidio", "spamassassin"]
    enron = summary["sources"]["enron"]
    assert enron["labels"] == {"confidential": 1, "ham": 1}
    assert enron["categories"]["confidential"] == {"items": 1, "tp": 1, "fp": 1, "fn": 0, "precision": 0.5,
                                                   "recall": 1.0, "f1": round(2 / 3, 4)}
    assert enron["ham"] == {"items": 1, "flagged": 1, "false_positive_rate": 1.0}
    assert summary["sources"]["spamassassin"]["ham"]["flagged"] == 0
    assert summary["sources"]["presidio"]["categories"]["pii"]["tp"] == 1
    assert summary["directions"]["outbound"]["sources"] == summary["sources"]

    assert cli.main(["evaluate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "confidential        1     1     1     0     0.500   1.000  0.667" in out      # the overall table, as before
    assert "by source, outbound:" in out
    assert f"{'enron':<12} {'confidential':<14}      1     1     1     0     0.500   1.000  0.667     2      0" in out
    assert f"{'spamassassin':<12} {'ham':<14}      1 not delivered 0 (held 0, tagged 0)" in out


def test_a_tag_is_counted_as_tagged_not_held(tmp_path, capsys):
    raw = cm.message("Username: kjones\nPassword: Blue!Harbor77\n", subject="VPN", to="bob@example.gov")
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "helpdesk-1.eml").write_bytes(raw)
    assert cli.main(["evaluate", "--json", "--direction", "internal", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["categories"]["credentials"]["tp"] == 1            # not delivered as sent: counted, as before
    assert summary["actions"]["categories"]["credentials"] == {
        "held": {"tp": 0, "fp": 0, "fn": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0},
        "tagged": {"tp": 1, "fp": 0}}


def test_evaluate_both_directions_reports_each(tmp_path, capsys):
    write_corpus(tmp_path)
    assert cli.main(["evaluate", "--json", "--direction", "both", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary["directions"]) == ["outbound", "inbound"]
    outbound, inbound = summary["directions"]["outbound"], summary["directions"]["inbound"]
    assert outbound["categories"] == summary["categories"]          # the overall table is the outbound pass
    assert inbound["items"] == 8 and inbound["categories"]["pii"]["items"] == 1
    assert outbound["actions"]["categories"]["pii"]["held"]["tp"] == 1
    assert inbound["sources"]["test"]["labels"]["ham"] == 3
    assert cli.main(["evaluate", "--direction", "both", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "direction outbound: held" in out and "direction inbound: held" in out
    assert "by source, outbound:" in out and "by source, inbound:" in out


def test_department_set_every_case_gets_its_expected_verdict(tmp_path, capsys, clamd_server):
    """tests/data/department as `gateway evaluate` reads it: ham delivered, every violation held (not only
    tagged) with its category, outbound; the set's own site.toml is used; the sections appear."""
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[antivirus]\nclamd = "{clamd_server.address}"\n')
    folder = DATA / "department"
    items = evaluate.read_manifest(folder)
    assert cli.main(["evaluate", "--json", "--mistakes", "--direction", "both", "--config", str(cfg),
                     str(folder)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["site"] == str(folder / "site.toml")
    assert summary["mistakes"] == []
    assert summary["ham"]["flagged"] == 0 and summary["items"] == len(items)
    labels = {evaluate.LABEL_CATEGORY.get(i.label, i.label) for i in items} - {"ham"}
    for c in labels:
        held = summary["actions"]["categories"][c]["held"]
        assert (held["tp"], held["fp"]) == (summary["categories"][c]["items"], 0), c
    assert set(summary["sources"]) == {"department"}
    assert set(summary["directions"]) == {"outbound", "inbound"}
    names = {i.path for i in items}
    for needed in ("pii/archive_zip_ssn_census.eml", "confidential/archive_targz_memo.eml",
                   "pii/archive_7z_card_ledger.eml", "confidential/archive_gz_memo.eml",
                   "ham/archive_zip_meeting_packet.eml",
                   *(f"confidential/lookalike_{t}.eml" for t in ("cyrillic", "fullwidth", "spaced", "dotted", "leet")),
                   *(f"pii/format_{t}.eml" for t in ("ssn_dots", "ssn_en_dash", "ssn_spaces", "ssn_line_break",
                                                     "ssn_spaced_dashes", "card_dots")),
                   "ham/russian_letter.eml", "ham/spaced_headings.eml", "ham/dotted_numbers.eml",
                   "ham/ssn_policy_reminder.eml"):
        assert needed in names
