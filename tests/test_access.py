"""The operator sign-in and its cross-site check, given hostile headers."""

import base64
import logging

import pytest

from app import create_app

USER, PASSWORD, TOKEN = "ops", "access-pw-123", "access-token-123"
PAGES = ["/status", "/metrics", "/rq/"]


@pytest.fixture
def ops(settings, redis):
    """A test client of a bridge with the operator pages on."""
    overrides = {
        **settings,
        "dashboard_username": USER,
        "dashboard_password": PASSWORD,
        "dashboard_token": TOKEN,
    }
    return create_app(overrides).test_client()


def basic_of(raw: bytes) -> dict[str, str]:
    """Return an HTTP Basic Authorization header carrying ``raw`` as user:password."""
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer access-tokén-123"},
        {"Authorization": "Bearer é"},
        basic_of("opsé:access-pw-123".encode()),
        basic_of("ops:access-pw-123é".encode()),
        basic_of("ops:pässwörd".encode("latin-1")),
    ],
    ids=["bearer-latin1", "bearer-short", "user-utf8", "password-utf8", "latin1"],
)
def test_credentials_with_other_scripts_are_a_401(ops, path, headers, caplog):
    """Credentials holding non-ASCII characters are wrong (401, one line), not a 500."""
    with caplog.at_level(logging.WARNING):
        answer = ops.get(path, headers=headers)

    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    lines = [r for r in caplog.records if "operator.unauthorized" in r.getMessage()]
    assert len(lines) == 1


def test_non_ascii_credentials_that_match_are_let_in(settings, redis):
    """A password with non-ASCII characters, given rightly, signs in."""
    app = create_app(
        {**settings, "dashboard_username": "öps", "dashboard_password": "pässwort"}
    )
    answer = app.test_client().get("/status", headers=basic_of("öps:pässwort".encode()))

    assert answer.status_code == 200


@pytest.mark.parametrize(
    "origin",
    ["http://[::1", "http://[", "https://[zz]:80/", "http://host:99999999999"],
)
def test_unparseable_origin_is_cross_site(ops, origin, caplog):
    """An Origin or Referer that is not a URL refuses the POST (403, one line)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for name in ("Origin", "Referer"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            answer = ops.post(
                "/status/dead-letters/x/replay", headers={**headers, name: origin}
            )

        assert answer.status_code == 403, (name, origin)
        lines = [r for r in caplog.records if "operator.cross_site" in r.getMessage()]
        assert len(lines) == 1


@pytest.mark.parametrize("path", PAGES)
def test_pages_off_refusal_is_one_log_line(client, path, caplog):
    """With no DASHBOARD_* settings, each 404 of an operator page writes one line."""
    with caplog.at_level(logging.WARNING):
        answer = client.get(path)

    assert answer.status_code == 404
    lines = [r for r in caplog.records if "operator.off" in r.getMessage()]
    assert len(lines) == 1


def test_a_post_from_the_public_url_is_same_site_behind_a_proxy(ops, caplog):
    """Behind a proxy that rewrites Host, a POST from PUBLIC_BASE_URL's pages is ours.

    nginx's proxy_pass sends Host as the upstream's address by default, so the
    browser's Origin (the public host) never equals the Host the bridge sees.
    """
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Host": "127.0.0.1:8000",
        "Origin": "https://bridge.example.test",
    }
    answer = ops.post("/status/dead-letters/x/replay", headers=headers)

    assert answer.status_code != 403
    evil = {**headers, "Origin": "https://evil.example"}
    assert ops.post("/status/dead-letters/x/replay", headers=evil).status_code == 403
