"""The queue's reason column, search and choice filters, grouped findings in the API, and the audit
log's filters, paging past 500 rows and CSV export: through the app, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from gateway.model import Finding
from gateway.quarantine import Query
from tests.support.quarantine_fixtures import PgDatabase, held_item
from tests.support.review_fixtures import ThreadSink, login, make_site, review_app

EXE_FINDINGS = (   # what one .exe attachment gives: five findings from two detectors on one part
    Finding("executable.pe", "attachments", "Windows executable setup.exe", part="attachment 2: setup.exe"),
    Finding("attachment.mismatch", "attachments", "declared application/pdf, is an executable",
            part="attachment 2: setup.exe"),
    Finding("attachment.extension", "attachments", "extension .exe hidden behind .pdf", part="attachment 2: setup.exe"),
    Finding("unscanned.encrypted", "antivirus", "not scanned: encrypted", part="attachment 2: setup.exe"),
    Finding("unscanned.size", "antivirus", "not scanned: too large", part="attachment 2: setup.exe"),
)


def exe_item(**kw):
    from dataclasses import replace
    return replace(held_item(subject="Setup for the printer", kinds=(), rule="inbound/executables",
                             direction="inbound", sender="it@vendor.example", **kw), findings=EXE_FINDINGS)


@pytest.fixture(params=["sqlite", "postgres"])
def site(request, tmp_path):
    sink = ThreadSink().start()
    now = time.time()
    pg = None
    url = ""
    if request.param == "postgres":
        pg = PgDatabase()
        url = asyncio.run(pg.__aenter__())
    site = make_site(tmp_path, sink, {
        "ssn": held_item(subject="Payroll March", kinds=("pii.ssn",), sender="hr.clerk@example.gov",
                         received_at=now - 3 * 86400),
        "card": held_item(subject="Card refund", kinds=("pii.card",), sender="hr.clerk@example.gov",
                          rcpts=("refunds@bank.example",), received_at=now - 2 * 86400),
        "conf": held_item(subject="Budget draft", kinds=("confidential.marking",), rule="outbound/confidential",
                          received_at=now - 3600),
        "exe": exe_item(received_at=now - 600),
        "two": held_item(subject="Two person memo", kinds=("commercial.quote",), approvals=2,
                         received_at=now - 7200),
        "virus": held_item(subject="Invoice 4471", kinds=("virus",), rule="inbound/malware", direction="inbound",
                           sender="billing@supplier.example", rcpts=("carol@example.gov",), received_at=now - 300),
    }, url=url)
    yield site
    sink.stop()
    if pg:
        asyncio.run(pg.__aexit__(None, None, None))


@pytest.fixture
def client(site):
    with TestClient(review_app(site.settings), follow_redirects=True) as c:
        yield c


def ids(client, site, **params) -> set[str]:
    token = {"Authorization": f"Bearer {site.tokens['rita']}"}
    body = client.get("/api/held", params=params, headers=token).json()
    names = {v.id: k for k, v in site.items.items()}
    return {names[i["id"]] for i in body["items"]}


def test_filters_by_substring_rule_kind_and_one_search_box(client, site):
    assert ids(client, site, rule="confidential") == {"conf"}          # part of outbound/confidential
    assert ids(client, site, category="pii.ssn") == {"ssn"}            # a kind typed as the category
    assert ids(client, site, kind="pii.card") == {"card"}
    assert ids(client, site, category="pii") == {"ssn", "card"}
    assert ids(client, site, q="HR.CLERK") == {"ssn", "card"}          # sender
    assert ids(client, site, q="bank.example") == {"card"}             # recipients
    assert ids(client, site, q="budget") == {"conf"}                   # subject
    assert ids(client, site, q="hidden behind") == {"exe"}             # a finding's words
    assert ids(client, site, q="50%") == set()                         # wildcards are literal


def test_the_queue_offers_choices_built_from_what_is_held_and_a_reason_per_row(client, site):
    login(client, "rita")
    page = client.get("/").text
    for choice in ("<option>pii.ssn</option>", "<option>pii.card</option>", "<option>confidential</option>",
                   '<option value="outbound/confidential">', "<option>executable.pe</option>"):
        assert choice in page, choice
    row = client.get("/", params={"q": "payroll"}).text
    reason = row[row.index('<td class="reason"'):]
    reason = reason[:reason.index("</td>")]
    assert "outbound/pii" in reason and "pii.ssn found in the body" in reason
    assert "SSN ***-**-6789" in reason and "6789" in reason and "123-45" not in reason    # masked evidence
    assert "outbound, 3 d ago" in reason
    exe = client.get("/", params={"q": "printer"}).text
    exe = exe[exe.index('<td class="reason"'):]
    assert "Windows executable setup.exe" in exe[:exe.index("</td>")]   # not "not scanned"
    assert "+1 more" in exe[:exe.index("</td>")]                        # two groups, not five findings


def test_bulk_on_everything_the_filter_matches_confirms_then_lists_done_and_refused(client, site):
    from tests.support.review_fixtures import csrf_of

    login(client, "rita")
    csrf = csrf_of(client.get("/").text)
    confirm = client.post("/bulk", data={"csrf": csrf, "action": "release", "step": "confirm", "scope": "filter",
                                         "filter": "status=held&direction=outbound", "reason": "checked"}).text
    assert re.search(r'id="bulk-count"><strong>3</strong> will be released', confirm)     # ssn, card, conf
    assert re.search(r'id="bulk-second"><strong>1</strong> need a second approval', confirm)
    assert "bulk-admin" not in confirm and site.items["virus"].id not in confirm       # inbound: not matched
    admin = client.post("/bulk", data={"csrf": csrf, "action": "release", "step": "confirm", "scope": "filter",
                                       "filter": "q=invoice", "reason": "checked"}).text
    assert re.search(r'id="bulk-admin"><strong>1</strong> need an admin', admin)
    site.run(lambda s: s.delete(site.items["conf"].id, "rolf"))      # no longer held: the filter leaves it out
    again = client.post("/bulk", data={"csrf": csrf, "action": "release", "step": "confirm", "scope": "filter",
                                       "filter": "direction=outbound", "reason": "checked"}).text
    assert re.search(r'id="bulk-count"><strong>2</strong> will be released', again)
    assert site.items["conf"].id not in again
    ids = re.findall(r'name="ids" value="([^"]+)"', again)
    assert len(ids) == 3
    done = client.post("/bulk", data={"csrf": csrf, "action": "release", "step": "do", "ids": ids,
                                      "reason": "checked"}).text
    assert "2 released, 1 approved (a second reviewer must approve)" in done
    assert site.run(lambda s: s.get(site.items["two"].id)).status == "held"
    assert len(re.findall(r'<li data-id=', done[done.index('id="bulk-done"'):done.index('id="bulk-refused"')])) == 3


def test_findings_are_grouped_per_part_and_detector_and_all_kept(client, site):
    login(client, "rita")
    item = site.items["exe"]
    shown = client.get(f"/held/{item.id}").text
    table = shown[shown.index('id="findings"'):shown.index("</table>", shown.index('id="findings"'))]
    assert table.count('<tr class="group">') == 2
    api = client.get(f"/api/held/{item.id}", headers={"Authorization": f"Bearer {site.tokens['rita']}"}).json()
    assert [(g["detector"], len(g["kinds"])) for g in api["finding_groups"]] == [("attachments", 3), ("antivirus", 2)]
    assert len(api["findings"]) == 5
    stored = site.run(lambda s: s.get(item.id))
    assert len(stored.findings) == 5


def test_audit_log_filters_pages_past_500_groups_and_exports_csv(client, site):
    now = time.time()

    async def fill(store):
        for n in range(620):
            await store.audit("rita" if n % 2 else "rolf", "view", site.items["ssn"].id if n % 3 else None,
                              "=HYPERLINK(\"http://evil\")" if n == 7 else f"r{n}")
        await store.audit("ada", "release", site.items["conf"].id, "sent on")
        return await store.audit_count(since=now - 60)
    assert site.run(fill) >= 621
    login(client, "ada")
    first = client.get("/audit").text
    assert "621 entries" not in first and "showing 1–100" in first
    total = int(first[first.index('id="audit-total">') + 17:].split(" ")[0])
    assert total >= 621
    older = first[:first.index('id="audit-older"')]
    href = older[older.rindex('href="') + 6:].split('"')[0].replace("&amp;", "&")
    assert "showing 101–200" in client.get(href).text
    assert f"showing 601–{min(total, 700)}" in client.get("/audit", params={"offset": "600"}).text
    # Who, action, message and date filters.
    released = client.get("/audit", params={"action": "release"}).text
    assert "1 entry" in released and "sent on" in released
    mine = client.get("/audit", params={"who": "rit", "message": site.items["ssn"].id}).text
    n_rita_ssn = sum(1 for n in range(620) if n % 2 and n % 3)
    assert f"{n_rita_ssn} entries" in mine
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert "0 entries" in client.get("/audit", params={"until": "2020-01-01"}).text
    assert client.get("/audit", params={"since": "not-a-date"}).status_code == 400
    grouped = client.get("/audit", params={"group": "message", "since": today}).text
    assert f'data-message="{site.items["ssn"].id}"' in grouped and 'data-message=""' in grouped
    # CSV: every matching row (no paging), formulas defused, the export itself audited.
    export = client.get("/audit.csv", params={"who": "rolf"})
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(export.text)))
    assert rows[0] == ["id", "at_utc", "who", "action", "message", "reason", "detail"]
    assert len(rows) - 1 == 310 and {r[2] for r in rows[1:]} == {"rolf"}
    everything = list(csv.reader(io.StringIO(client.get("/audit.csv").text)))
    assert any(r[5] == "'=HYPERLINK(\"http://evil\")" for r in everything)
    assert site.run(lambda s: s.audit_log(action="audit-export"))[0].actor == "ada"
    login(client, "rita")
    assert client.get("/audit.csv").status_code == 403


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_store_query_search_and_choices(tmp_path, backend):
    import contextlib

    from tests.support.quarantine_fixtures import opened, store_url

    async def go():
        async with contextlib.AsyncExitStack() as stack:
            store = await opened(await store_url(backend, tmp_path, stack))
            stack.push_async_callback(store.close)
            await store.hold(exe_item())
            await store.hold(held_item(kinds=("pii.ssn",), subject="x_y"))
            assert (await store.query(Query(search="EXECUTABLE"))).total == 1
            assert (await store.query(Query(search="_"))).total == 1
            assert (await store.query(Query(kind="unscanned.size"))).total == 1
            choices = await store.choices()
            assert choices["rules"] == ["inbound/executables", "outbound/pii"]
            assert "attachment.mismatch" in choices["kinds"] and "unscanned" in choices["categories"]
    asyncio.run(go())
