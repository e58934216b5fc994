"""The login throttle: per account and client, so failures on one account never block another; behind a
trusted reverse proxy the client is the address in `[review] client_ip_header`, from anyone else the TCP peer."""

from __future__ import annotations

import asyncio
import time
import warnings

import httpx
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from gateway import config
from tests.support.review_fixtures import PASSWORDS, ThreadSink, csrf_of, login, make_site, review_app

PROXY = ("127.0.0.1", 40000)          # in the default [review] trusted_proxies
OUTSIDER = ("192.0.2.9", 40000)       # not


@pytest.fixture
def sink():
    s = ThreadSink().start()
    yield s
    s.stop()


@pytest.fixture
def site(tmp_path, sink):
    return make_site(tmp_path, sink, {})


@pytest.fixture
def proxied_site(tmp_path, sink):
    return make_site(tmp_path, sink, {}, client_ip_header="X-Forwarded-For")


def attempt(client: TestClient, name: str, password: str | None = None, ip: str | None = None) -> int:
    if ip is not None:
        client.headers["X-Forwarded-For"] = ip
    else:
        client.headers.pop("X-Forwarded-For", None)
    client.cookies.clear()
    return login(client, name, password).status_code


def fail_five_times(client: TestClient, name: str, ip: str | None = None) -> None:
    for _ in range(5):
        assert attempt(client, name, "wrong password", ip) == 401
    assert attempt(client, name, None, ip) == 429            # the right password, now throttled


def login_clients(site) -> list[str]:
    return [e.detail.get("client") for e in site.run(lambda s: s.audit_log()) if e.action.startswith("login")]


def test_failures_on_one_account_do_not_block_another_from_the_same_address(site):
    with TestClient(review_app(site.settings), follow_redirects=False) as client:
        fail_five_times(client, "rita")
        assert attempt(client, "ada") == 303
        assert attempt(client, "rolf") == 303
        assert attempt(client, "rita") == 429
        fail_five_times(client, "nobody-at-all")          # unknown names get their own budget too
        assert attempt(client, "rolf") == 303


def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_budget(proxied_site):
    site = proxied_site
    with TestClient(review_app(site.settings), client=PROXY, follow_redirects=False) as client:
        fail_five_times(client, "rita", "198.51.100.7")
        assert attempt(client, "rita", None, "198.51.100.8") == 303         # rita at her own desk
        assert attempt(client, "ada", None, "198.51.100.7") == 303          # another account, same address
        assert attempt(client, "rita", None, "198.51.100.7") == 429
    clients = login_clients(site)
    assert "198.51.100.7" in clients and "198.51.100.8" in clients and "127.0.0.1" not in clients


def test_the_proxys_own_entry_counts_not_what_the_client_prepended(proxied_site):
    """X-Forwarded-For grows to the right: the proxy appends the address it saw, so a client who writes its
    own X-Forwarded-For only changes the entries on the left, which are ignored."""
    site = proxied_site
    with TestClient(review_app(site.settings), client=PROXY, follow_redirects=False) as client:
        for n in range(5):
            assert attempt(client, "rita", "wrong password", f"10.9.9.{n}, 198.51.100.7") == 401
        assert attempt(client, "rita", None, "10.9.9.99, 198.51.100.7") == 429
        assert attempt(client, "rita", None, "198.51.100.7, 127.0.0.1") == 429     # a second trusted hop
        assert attempt(client, "rita", None, "198.51.100.8") == 303


def test_ipv6_clients_are_counted_per_64_network(proxied_site):
    site = proxied_site
    with TestClient(review_app(site.settings), client=PROXY, follow_redirects=False) as client:
        for n in range(5):
            assert attempt(client, "rita", "wrong password", f"2001:db8:1:2::{n + 1}") == 401
        assert attempt(client, "rita", None, "2001:db8:1:2:ffff::9") == 429
        assert attempt(client, "rita", None, "2001:db8:1:3::1") == 303


def test_an_untrusted_peers_header_is_ignored(proxied_site):
    site = proxied_site
    with TestClient(review_app(site.settings), client=OUTSIDER, follow_redirects=False) as client:
        for n in range(5):
            assert attempt(client, "rita", "wrong password", f"198.51.100.{n}") == 401
        assert attempt(client, "rita", None, "198.51.100.200") == 429       # the header changes nothing
        assert attempt(client, "ada", None, "198.51.100.0") == 303
    assert set(login_clients(site)) == {"192.0.2.9"}


def test_without_client_ip_header_a_trusted_proxy_is_the_client(site):
    with TestClient(review_app(site.settings), client=PROXY, follow_redirects=False) as client:
        for n in range(5):
            assert attempt(client, "rita", "wrong password", f"198.51.100.{n}") == 401
        assert attempt(client, "rita", None, "198.51.100.200") == 429
        assert attempt(client, "rolf", None, "198.51.100.200") == 303


def test_an_account_is_throttled_across_many_addresses(proxied_site):
    """Guessing one account's password from many addresses meets a budget of its own (ten times the
    per-address one); other accounts are not affected."""
    site = proxied_site
    with TestClient(review_app(site.settings), client=PROXY, follow_redirects=False) as client:
        for n in range(50):
            assert attempt(client, "rita", "wrong password", f"203.0.113.{n // 5}") == 401
        assert attempt(client, "rita", None, "198.51.100.8") == 429
        assert attempt(client, "rolf", None, "198.51.100.8") == 303


@pytest.mark.parametrize("value", ["X Forwarded", "X-Forwarded-For:", "a\r\nb", "Ü"])
def test_client_ip_header_must_be_a_header_name(value):
    with pytest.raises(config.ConfigError, match="client_ip_header"):
        config.from_dict({"review": {"client_ip_header": value}})


def test_trusted_proxies_must_be_networks():
    with pytest.raises(config.ConfigError, match="trusted_proxies"):
        config.from_dict({"review": {"trusted_proxies": ["not-a-network"]}})


# --- over a real socket, served by uvicorn as `gateway run` and `gateway review` serve it ----------------------

class Served:
    """The review app on uvicorn (proxy_headers off, as in production) in a thread of its own."""

    def __init__(self, settings: config.Settings) -> None:
        import threading

        from gateway.review.server import server

        self.server = server(review_app(settings), settings)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.url = f"http://{settings.review.listen}"

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def http_login(url: str, name: str, password: str | None, forwarded: str) -> int:
    with httpx.Client(base_url=url, headers={"X-Forwarded-For": forwarded}, timeout=10) as client:
        form = client.get("/login")
        r = client.post("/login", data={"csrf": csrf_of(form.text), "name": name, "next": "/",
                                        "password": PASSWORDS[name] if password is None else password})
        return r.status_code


@pytest.mark.parametrize("trusted", [True, False])
def test_over_http_the_header_counts_only_from_a_trusted_peer(tmp_path, sink, trusted):
    site = make_site(tmp_path, sink, {}, client_ip_header="X-Forwarded-For",
                     trusted_proxies=["127.0.0.1/32"] if trusted else ["192.0.2.0/24"])
    with Served(site.settings) as served:
        for n in range(5):
            assert http_login(served.url, "rita", "wrong password", f"198.51.100.{n}") == 401
        assert http_login(served.url, "rita", None, "198.51.100.77") == (303 if trusted else 429)
        assert http_login(served.url, "ada", None, "198.51.100.1") == 303
    clients = set(login_clients(site))
    assert clients == ({f"198.51.100.{n}" for n in (0, 1, 2, 3, 4, 77)} if trusted else {"127.0.0.1"})


def test_a_spray_of_names_does_not_push_a_throttled_account_out_of_memory(monkeypatch):
    from gateway.review import auth

    monkeypatch.setattr(auth, "MAX_KEYS", 200)
    throttle = auth.Throttle(5, 300)
    for _ in range(5):
        throttle.fail("198.51.100.7", "rita")
    for n in range(1000):                              # one failure each for many made-up names
        throttle.fail(f"203.0.113.{n % 250}", f"nobody{n}")
    assert len(throttle.failures) <= 200
    assert throttle.blocked("198.51.100.7", "rita") and not throttle.blocked("198.51.100.8", "rita")
    throttle.succeeded("198.51.100.7", "rita")
    assert not throttle.blocked("198.51.100.7", "rita")
