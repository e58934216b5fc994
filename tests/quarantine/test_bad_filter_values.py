"""Out-of-range dates and numbers in the quarantine filters (page, API, CLI) are refused as bad input,
and every error response of the review app carries the same security headers as a normal page."""

from __future__ import annotations

import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from tests.quarantine.test_cli import run
from tests.support.quarantine_fixtures import held_item
from tests.support.review_fixtures import ThreadSink, login, make_site, review_app

BAD = [("until", "9999-12-31"), ("since", "2026-13-01"),
       ("until", "2026-02-30"), ("limit", "1e309"), ("offset", "9" * 150), ("limit", "x")]
SECURITY = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy",
            "Cache-Control", "Cross-Origin-Opener-Policy")


@pytest.fixture
def sink():
    s = ThreadSink().start()
    yield s
    s.stop()


@pytest.fixture
def site(tmp_path, sink):
    site = make_site(tmp_path, sink, {"pii": held_item(subject="Payroll", kinds=("pii.ssn",))})
    config = tmp_path / "gateway.toml"
    config.write_text(f'[quarantine]\nurl = "{site.url}"\n[relay]\nnext_hop = "127.0.0.1:{sink.port}"\n'
                      '[domains]\nlocal = ["example.gov"]\n')
    site.config = str(config)
    return site


@pytest.fixture
def client(site):
    with TestClient(review_app(site.settings), follow_redirects=False, raise_server_exceptions=False) as c:
        yield c


def secured(response) -> bool:
    return all(h in response.headers for h in SECURITY)


@pytest.mark.parametrize(("param", "value"), BAD)
def test_page_and_api_answer_400_for_a_date_or_number_out_of_range(client, site, param, value):
    assert login(client, "ada").status_code == 303
    page = client.get("/", params={param: value})
    assert page.status_code == 400, page.text[:300]
    assert param in page.text and "Traceback" not in page.text and secured(page)
    api = client.get("/api/held", params={param: value}, headers={"Authorization": f"Bearer {site.tokens['ada']}"})
    assert api.status_code == 400 and param in api.json()["error"] and secured(api)
    assert client.get("/", params={"until": "9999-12-30"}).status_code == 200     # the last day that has an end


@pytest.mark.parametrize(("param", "value"), [b for b in BAD if b[0] in ("since", "until")])
def test_cli_list_prints_one_line_for_a_date_out_of_range(site, capsys, param, value):
    code, out, err = run(capsys, "quarantine", "list", f"--{param}", value, "--config", site.config)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("gateway: ") and param in err and "Traceback" not in err


def test_error_pages_carry_the_security_headers(client, site, monkeypatch):
    assert login(client, "ada").status_code == 303
    for response in (client.get("/no/such/page"), client.get("/held/nosuchid"), client.post("/"),
                     client.get("/static/nope.css"),
                     client.get("/api/held", headers={"Authorization": "Bearer wrong"})):
        assert response.status_code in (401, 404, 405), response.status_code
        assert secured(response), (response.status_code, dict(response.headers))

    async def broken(*args, **kwargs):
        raise RuntimeError("the store fell over")
    monkeypatch.setattr(type(client.app.state.ctx.store), "oldest_held", broken)
    failed = client.get("/")
    assert failed.status_code == 500 and secured(failed), dict(failed.headers)
    assert "the store fell over" not in failed.text and "Traceback" not in failed.text
    assert failed.headers["Content-Security-Policy"].startswith("default-src 'none'")
