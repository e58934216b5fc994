"""A held message whose virus only the release's re-scan finds (clamd was down when it arrived): asking
again never releases it. The re-scan's findings are recorded on the item and shown on the page, in the
API and by `quarantine show`; from then on only an admin may release it, naming the virus."""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import replace

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from gateway import cli, policy
from gateway.actions import Actions
from gateway.model import Direction
from gateway.pipeline import Pipeline
from gateway.quarantine import Query, User
from gateway.release import Refused, ReleaseService, may
from tests.support import files
from tests.support.clamav import FOUND
from tests.support.quarantine_fixtures import held_item, opened, store_url
from tests.support.release_fixtures import make_release_site
from tests.support.review_fixtures import ThreadSink, csrf_of, login, review_app
from tests.support.settings import make_settings

REVIEWER = User("rita", "reviewer")
ADMIN = User("ada", "admin")


def eicar_message(subject: str = "Invoice") -> bytes:
    return files.message_with([("invoice.com", files.eicar(), "application/octet-stream")], subject=subject)


@pytest.fixture
def sink():
    s = ThreadSink().start()
    yield s
    s.stop()


@pytest.fixture
def site(tmp_path, sink):
    site = make_release_site(tmp_path, sink)
    yield site
    site.scanner.stop()


@pytest.fixture
def held(site):
    """The EICAR message, held while clamd was down; clamd is up again afterwards."""
    item = site.receive(eicar_message())
    assert item.rule == "inbound/unscanned" and "unscanned.scanner_unavailable" in item.kinds
    assert "virus" not in item.kinds
    site.scanner.start()
    return item


def bearer(site, name):
    return {"Authorization": f"Bearer {site.tokens[name]}"}


def virus_findings(findings: list[dict]) -> list[dict]:
    return [f for f in findings if f["kind"] == "virus"]


def test_api_release_twice_never_delivers_the_virus(site, held, sink):
    with TestClient(review_app(site.settings), follow_redirects=True) as client:
        url = f"/api/held/{held.id}/release"
        first = client.post(url, json={"reason": "the scanner was down"}, headers=bearer(site, "rita"))
        assert first.status_code == 409 and "virus" in first.json()["rescan"]["added"]
        second = client.post(url, json={"reason": "the scanner was down"}, headers=bearer(site, "rita"))
        assert second.status_code == 403, second.json()
        assert "admin" in second.json()["error"]
        assert sink.messages == []

        shown = client.get(f"/api/held/{held.id}", headers=bearer(site, "rita")).json()
        [virus] = virus_findings(shown["rescan_findings"])
        assert virus["evidence"] == [FOUND] and virus["detector"] == "antivirus"
        assert shown["release_role"] == "admin" and "virus" in shown["kinds"]
        listed = client.get("/api/held", params={"category": "virus"}, headers=bearer(site, "rita")).json()
        assert [i["id"] for i in listed["items"]] == [held.id]

        # an admin must name the virus: missing or wrong is refused
        missing = client.post(url, json={"reason": "AV vendor sample"}, headers=bearer(site, "ada"))
        assert missing.status_code == 422 and FOUND not in missing.json()["error"]
        assert "confirm" in missing.json()["error"]
        wrong = client.post(url, json={"reason": "AV vendor sample", "confirm": "Eicar-Test-Signature"},
                            headers=bearer(site, "ada"))
        assert wrong.status_code == 422
        not_text = client.post(url, json={"reason": "AV vendor sample", "confirm": 1}, headers=bearer(site, "ada"))
        assert not_text.status_code in (400, 422)
        assert sink.messages == []
        right = client.post(url, json={"reason": "AV vendor sample", "confirm": FOUND}, headers=bearer(site, "ada"))
        assert right.status_code == 200 and right.json()["status"] == "released"
    [got] = sink.messages
    assert got.rcpt_tos == ["staff@example.gov"]
    actions = [e.action for e in site.run(lambda s: s.audit_log(held_id=held.id))]
    assert actions.count("release-stopped") == 1 and actions.count("release-denied") >= 3
    assert actions[0] == "release"


def test_page_shows_the_recorded_virus_and_asks_the_admin_to_name_it(site, held, sink):
    app = review_app(site.settings)
    with TestClient(app, follow_redirects=True) as client:
        assert login(client, "rita").status_code == 200
        page = client.get(f"/held/{held.id}")
        for _ in range(2):
            r = client.post(f"/held/{held.id}/release", data={"csrf": csrf_of(page.text), "reason": "scanner down"})
            assert r.status_code == 200
        assert sink.messages == []
        assert "only an admin" in r.text or "needs the admin role" in r.text
        page = client.get(f"/held/{held.id}")
        assert FOUND in page.text and "Releasing this message needs the admin role" in page.text
        assert "new findings: none" not in page.text.lower()
        assert 'id="release-form"' not in page.text          # a reviewer is not offered the release
    with TestClient(app, follow_redirects=True) as client:
        assert login(client, "ada").status_code == 200
        page = client.get(f"/held/{held.id}")
        assert 'name="confirm"' in page.text
        bulk = client.post("/bulk", data={"csrf": csrf_of(page.text), "action": "release", "ids": [held.id],
                                          "reason": "all fine"})
        assert "0 released" in bulk.text and "confirm" in bulk.text
        r = client.post(f"/held/{held.id}/release", data={"csrf": csrf_of(page.text), "reason": "vendor sample",
                                                          "confirm": "virus"})
        assert "confirm" in r.text and sink.messages == []
        r = client.post(f"/held/{held.id}/release", data={"csrf": csrf_of(page.text), "reason": "vendor sample",
                                                          "confirm": FOUND})
        assert "Released to staff@example.gov" in r.text
    assert len(sink.messages) == 1


def test_a_rescan_from_the_page_records_the_virus(site, held, sink):
    with TestClient(review_app(site.settings), follow_redirects=True) as client:
        assert login(client, "rita").status_code == 200
        page = client.get(f"/held/{held.id}", params={"rescan": "1"})
        assert 'id="rescan-findings"' in page.text and FOUND in page.text
        assert "Releasing this message needs the admin role" in page.text and 'id="release-form"' not in page.text
        r = client.post(f"/held/{held.id}/release", data={"csrf": csrf_of(page.text), "reason": "scanner down"})
        assert "needs the admin role" in r.text
    assert sink.messages == [] and site.item(held.id).release_role == "admin"


def test_cli_release_twice_never_delivers_the_virus(site, held, sink, capsys):
    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main([*argv, "--config", site.config])
        out, err = capsys.readouterr()
        return code, out, err

    for _ in range(2):
        code, out, err = run("quarantine", "release", held.id, "--by", "rita", "--reason", "scanner was down")
        assert code == 1
    assert sink.messages == []
    code, _, err = run("quarantine", "release", held.id, "--by", "mallory", "--reason", "x")
    assert code != 0 and "mallory" in err and len(errors(err)) == 1
    code, out, _ = run("quarantine", "show", held.id, "--json")
    shown = json.loads(out)
    assert [f["evidence"] for f in virus_findings(shown["rescan_findings"])] == [[FOUND]]
    code, out, _ = run("quarantine", "show", held.id)
    assert FOUND in out
    code, _, err = run("quarantine", "release", held.id, "--by", "ada", "--reason", "vendor sample")
    assert code == 1 and "--confirm-virus" in err
    code, _, err = run("quarantine", "release", held.id, "--by", "ada", "--reason", "vendor sample",
                       "--confirm-virus", "EICAR")
    assert code == 1 and sink.messages == []
    code, out, _ = run("quarantine", "release", held.id, "--by", "ada", "--reason", "vendor sample",
                       "--confirm-virus", FOUND)
    assert code == 0 and "released" in out
    assert len(sink.messages) == 1
    actors = {e.actor for e in site.run(lambda s: s.audit_log(held_id=held.id))}
    assert "mallory (cli)" not in actors


@pytest.fixture(params=["sqlite", "postgres"])
async def service(request, tmp_path, sink):
    async with contextlib.AsyncExitStack() as stack:
        url = await store_url(request.param, tmp_path, stack)
        settings = make_settings(tmp_path, sink.port, quarantine={"url": url})
        store = await opened(url)
        stack.push_async_callback(store.close)
        pipeline = Pipeline(settings, policy.load(settings))
        yield ReleaseService(settings, store, pipeline, Actions(settings, store))


async def test_any_rescan_records_its_findings_on_both_backends(service, sink):
    """A re-scan from the page (not a release) records the virus too: the reviewer can no longer release."""
    item = held_item(kinds=("unscanned.scanner_unavailable",), rule="inbound/unscanned", direction="inbound",
                     raw=eicar_message(), sender="x@outside.test", rcpts=("staff@example.gov",))
    await service.store.hold(item)
    rescan = await service.rescan(item)
    assert "virus" in rescan.added
    stored = await service.store.get(item.id, with_raw=False)
    assert [f.evidence for f in stored.rescan_findings if f.kind == "virus"] == [(FOUND,)]
    assert stored.release_role == "admin" and "virus" in stored.categories
    assert [i.id for i in (await service.store.query(Query(category="virus"))).items] == [item.id]
    with pytest.raises(Refused) as e:
        await service.release(item.id, REVIEWER, "scanner was down")
    assert e.value.status == 403
    with pytest.raises(Refused) as e:
        await service.release(item.id, ADMIN, "vendor sample", confirm=f" {FOUND.lower()} ")
    assert e.value.status == 422
    assert sink.messages == []
    outcome = await service.release(item.id, ADMIN, "vendor sample", confirm=FOUND)
    assert outcome.status == "released" and len(sink.messages) == 1


async def held_with_virus(service, signature: str = FOUND):
    """The EICAR message as the relay holds it with clamd up (the virus found at receipt); `signature`
    stands in for the name clamd reported then."""
    raw = eicar_message()
    item = held_item(kinds=(), rule="inbound/malware", direction="inbound", raw=raw, sender="x@outside.test",
                     rcpts=("staff@example.gov",))
    verdict = (await service.pipeline.inspect(service._envelope(item), raw, direction=Direction.INBOUND)).verdict
    assert "virus" in verdict.kinds
    findings = tuple(replace(f, evidence=(signature,)) if f.kind == "virus" else f for f in verdict.findings)
    item = replace(item, rule=verdict.rule, findings=findings)
    await service.store.hold(item)
    return item


async def test_a_virus_found_at_hold_needs_the_admin_to_name_it(service, sink):
    item = await held_with_virus(service)
    with pytest.raises(Refused) as e:
        await service.release(item.id, REVIEWER, "looks fine")
    assert e.value.status == 403
    with pytest.raises(Refused) as e:
        await service.release(item.id, ADMIN, "vendor sample")
    assert e.value.status == 422 and "confirm" in str(e.value)
    outcome = await service.release(item.id, ADMIN, "vendor sample", confirm=FOUND)
    assert outcome.status == "released", (outcome.message, outcome.rescan)


async def test_an_admin_naming_one_virus_does_not_release_another(service, sink):
    """The admin confirmed the virus found at hold; the re-scan finds a different one: stopped."""
    item = await held_with_virus(service, "Old.Sig")
    outcome = await service.release(item.id, ADMIN, "vendor sample", confirm="Old.Sig")
    assert outcome.status == "failed" and FOUND in outcome.message and sink.messages == []
    with pytest.raises(Refused) as e:
        await service.release(item.id, ADMIN, "vendor sample", confirm="Old.Sig")
    assert e.value.status == 422
    outcome = await service.release(item.id, ADMIN, "vendor sample", confirm=f"Old.Sig, {FOUND}")
    assert outcome.status == "released" and len(sink.messages) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_items_re_scanned_before_migration_5_get_their_findings_recorded(backend, tmp_path):
    """A store of schema 3 whose item a release's re-scan once stopped for a virus: once migrated, the
    virus is recorded and a reviewer can no longer release it."""
    import sqlite3

    import asyncpg

    from gateway.model import Finding
    from gateway.quarantine import schema
    from gateway.quarantine.postgres import numbered
    from gateway.quarantine.sql import COLUMNS, _values

    virus = Finding(kind="virus", detector="antivirus", detail=f"Virus {FOUND} found in invoice.com",
                    part="part 2: invoice.com", evidence=(FOUND,))
    item = held_item(kinds=("unscanned.scanner_unavailable",), rule="inbound/unscanned", direction="inbound")
    item = replace(item, extra={**item.extra, "acknowledged_kinds": ["virus"],
                                "rescan": {"rule": "inbound/malware", "kinds": ["virus"], "added": ["virus"],
                                           "findings": [virus.as_dict()]}})
    columns = COLUMNS.split(", ")[:23]        # the held table of schema 3
    insert = (f"INSERT INTO held ({', '.join(columns)}, raw) VALUES ({', '.join('?' * (len(columns) + 1))})")
    async with contextlib.AsyncExitStack() as stack:
        url = await store_url(backend, tmp_path, stack)
        if backend == "sqlite":
            with sqlite3.connect(url.removeprefix("sqlite://")) as db:
                for statement in [s for m in schema.SQLITE[:3] for s in m]:
                    db.execute(statement)
                db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                db.executemany("INSERT INTO schema_version VALUES (?)", [(1,), (2,), (3,)])
                db.execute(insert, (*_values(item)[:23], item.raw))
        else:
            conn = await asyncpg.connect(url)
            try:
                for statement in [s for m in schema.POSTGRES[:3] for s in m]:
                    await conn.execute(statement)
                await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                await conn.execute("INSERT INTO schema_version VALUES (1), (2), (3)")
                await conn.execute(numbered(insert), *_values(item)[:23], item.raw)
            finally:
                await conn.close()
        store = await opened(url)
        stack.push_async_callback(store.close)
        stored = await store.get(item.id, with_raw=False)
        assert stored.rescan_findings == (virus,) and stored.auth_results == ""
        assert stored.release_role == "admin" and stored.virus_names == (FOUND,)
        assert not may(REVIEWER, "release", stored)
        assert [i.id for i in (await store.query(Query(category="virus"))).items] == [item.id]


async def test_a_rule_the_rescan_matches_that_needs_an_admin_counts_from_then_on(tmp_path, sink):
    """The re-scan's rule says release_role = "admin": a reviewer asking again is refused too."""
    site = tmp_path / "site.toml"
    site.write_text('[[outbound.rules]]\nname = "broken"\nmatch = ["malformed.*"]\naction = "quarantine"\n'
                    'release_role = "admin"\n')
    settings = make_settings(tmp_path, sink.port, policy={"site": str(site)})
    store = await opened(settings.quarantine.url)
    try:
        service = ReleaseService(settings, store, Pipeline(settings, policy.load(settings)), Actions(settings, store))
        raw = (b"From: a@example.gov\r\nTo: b@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n")
        item = held_item(raw=raw, kinds=("pii.ssn",))
        await store.hold(item)
        outcome = await service.release(item.id, REVIEWER, "fp")
        assert outcome.status == "failed" and outcome.rescan.rule == "outbound/broken"
        with pytest.raises(Refused) as e:
            await service.release(item.id, REVIEWER, "seen it")
        assert e.value.status == 403 and sink.messages == []
        assert (await service.release(item.id, ADMIN, "seen it")).status == "released"
    finally:
        await store.close()


def test_cli_by_must_name_an_enabled_account(site, held, sink, capsys):
    async def disable(store):
        async with store._tx() as conn:
            await conn.execute("UPDATE users SET disabled = 1 WHERE name = 'ada'")
    site.run(disable)
    for name, says in (("root", "no account 'root'"), ("ada", "'ada' is disabled")):
        for action in ("release", "delete"):
            code = cli.main(["quarantine", action, held.id, "--by", name, "--reason", "x", "--config", site.config])
            _, err = capsys.readouterr()
            assert code == 1 and says in err and len(errors(err)) == 1
    assert site.item(held.id).status == "held" and sink.messages == []


def errors(err: str) -> list[str]:
    """stderr's lines without the line that names the config and store opened (every store command has it)."""
    return [line for line in err.strip().splitlines() if not line.startswith("gateway: config ")]
