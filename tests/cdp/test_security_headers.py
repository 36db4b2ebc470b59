"""Secure headers: the demo shop and the admin carry a strict Content-Security-Policy
and the usual hardening headers; the JSON API carries none of the page policy but keeps
working for the browser SDK (CORS); every body has a ceiling (413 with the error shape)."""

from __future__ import annotations

import gzip
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

ROOT = Path(settings.BASE_DIR)
TEMPLATE_DIRS = [ROOT / "templates", ROOT / "storefront" / "templates"]


def csp(response: Any) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = (part.strip().split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


def assert_hardening_headers(response: Any) -> None:
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert "camera=()" in response["Permissions-Policy"]
    assert "geolocation=()" in response["Permissions-Policy"]


def assert_strict_frame(policy: dict[str, list[str]]) -> None:
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]


class _InlineCode(HTMLParser):
    """Collects what a strict policy would block: inline scripts, event-handler
    attributes, style attributes and <style> blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> block")
        self.found += [f"{tag} {name}=" for name in names if name.startswith("on")]
        if "style" in names:
            self.found.append(f"{tag} style=")


@pytest.mark.django_db
def test_the_demo_shop_has_a_strict_policy_and_the_hardening_headers():
    # Given a shopper opening the demo storefront
    response = Client().get("/demo/")

    # Then the page is served with a strict policy: scripts and styles only from the
    # product's own origin, no plugins, no framing, no foreign form targets
    assert response.status_code == 200
    policy = csp(response)
    assert_strict_frame(policy)
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]  # the SDK calls the same origin
    assert_hardening_headers(response)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/demo/", "/demo/p/trail-runner/", "/demo/cart/", "/demo/login/"])
def test_the_demo_pages_hold_nothing_the_policy_would_block(path):
    # Given a storefront page
    response = Client().get(path)
    assert response.status_code == 200, path

    # When its HTML is read
    parser = _InlineCode()
    parser.feed(response.content.decode())

    # Then it has no inline script, handler or style the strict policy would block
    assert parser.found == []


def test_no_template_uses_inline_handlers_or_unnonced_scripts():
    # Given every template of the product (the admin's and the storefront's)
    problems = []
    for folder in TEMPLATE_DIRS:
        for template in folder.rglob("*.html"):
            text = template.read_text()
            # Then no element has an on…= handler (no nonce can allow one) …
            if re.search(r"<[a-z][^>]*\son[a-z]+\s*=", text, re.IGNORECASE):
                problems.append(f"{template.relative_to(ROOT)}: inline event handler")
            # … and every inline script carries the request's nonce
            for tag in re.findall(r"<script\b[^>]*>", text, re.IGNORECASE):
                if "src=" not in tag and "csp_nonce" not in tag:
                    problems.append(f"{template.relative_to(ROOT)}: {tag} without a nonce")
    assert problems == []


@pytest.mark.django_db
def test_the_admin_allows_style_attributes_but_no_inline_script():
    # Given the admin's login page (Django's widgets and our charts use style attributes)
    response = Client().get("/admin/login/")

    # Then styles may be inline there, scripts still may not
    assert response.status_code == 200
    policy = csp(response)
    assert_strict_frame(policy)
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert_hardening_headers(response)


@pytest.mark.django_db
def test_an_admin_page_with_an_inline_script_gets_its_nonce(superuser_client):
    # Given an admin page that renders an inline script (a template using the nonce)
    from django.template import engines
    from django.test import RequestFactory

    from cdp.security import ContentSecurityPolicyMiddleware

    request = RequestFactory().get("/admin/anything/")

    def page(req: Any) -> Any:
        from django.http import HttpResponse

        template = engines["django"].from_string(
            '<script nonce="{{ request.csp_nonce }}">1</script>'
        )
        return HttpResponse(template.render({"request": req}))

    # When the middleware answers it
    response: Any = ContentSecurityPolicyMiddleware(page)(request)

    # Then the header allows exactly that nonce, and still no 'unsafe-inline' script
    found = re.search(r'nonce="([^"]+)"', response.content.decode())
    assert found is not None
    nonce = found.group(1)
    assert f"'nonce-{nonce}'" in csp(response)["script-src"]
    assert "'unsafe-inline'" not in csp(response)["script-src"]


@pytest.mark.django_db
def test_the_json_api_has_no_page_policy_but_cors_still_works(write_client):
    # Given the browser SDK on an allowed origin
    response = write_client.post(
        "/api/v1/events",
        {"type": "page", "anonymous_id": "a-headers"},
        format="json",
        HTTP_ORIGIN="https://shop.example",
    )

    # Then the API answers it, lets that origin read the answer, and sends no page CSP
    assert response.status_code == 202
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Content-Security-Policy" not in response
    assert response["X-Content-Type-Options"] == "nosniff"


# --- body limits: 413 with the error shape, everywhere ------------------------------

MB = 1024 * 1024


def assert_too_large(response: Any) -> None:
    assert response.status_code == 413, response.content[:300]
    body = response.json()
    assert body["error"]["code"] == "payload_too_large"
    assert body["error"]["message"]


def padded(size: int, **fields: Any) -> dict[str, Any]:
    return {**fields, "padding": "x" * size}


@pytest.mark.django_db
def test_an_event_batch_over_500_kb_is_413(write_client):
    batch = [{"type": "track", "event": "e", "anonymous_id": "a", "properties": {"p": "x" * 1000}}]
    assert_too_large(write_client.post("/api/v1/events", {"batch": batch * 520}, format="json"))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/api/v1/decide", {"anonymous_id": "a", "slots": ["hero"]}),
        ("/api/v1/consent", {"anonymous_id": "a", "purposes": {"analytics": True}}),
    ],
)
def test_write_key_endpoints_refuse_bodies_over_the_limit(write_client, path, fields):
    # Given a body over the 1 MB ceiling / Then 413, before it is parsed
    assert_too_large(write_client.post(path, padded(MB, **fields), format="json"))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/v1/privacy/requests"),
        ("post", "/api/v1/segments"),
        ("post", "/api/v1/segments/preview"),
        ("post", "/api/v1/slots"),
        ("post", "/api/v1/rules"),
        ("post", "/api/v1/experiments"),
        ("put", "/api/v1/segments/some-segment"),
        ("patch", "/api/v1/rules/some-rule"),
    ],
)
def test_secret_key_endpoints_refuse_bodies_over_the_limit(secret_client, method, path):
    response = getattr(secret_client, method)(path, padded(MB, type="access"), format="json")
    assert_too_large(response)


@pytest.mark.django_db
def test_a_segment_message_over_32_kb_is_413(write_client):
    body = {"event": "Big", "anonymousId": "a", "properties": {"p": "x" * 40_000}}
    assert_too_large(write_client.post("/v1/track", body, format="json"))


@pytest.mark.django_db
def test_a_gzip_bomb_is_413_without_inflating_it(write_client):
    # Given 50 MB of blanks, gzipped to some 50 KB, sent to the Segment batch endpoint
    bomb = gzip.compress(b"[" + b" " * (50 * MB) + b"]", compresslevel=9)
    assert len(bomb) < 500 * 1024

    # When it is posted / Then it is refused once the first 500 KB are inflated
    response = write_client.post(
        "/v1/batch", data=bomb, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert_too_large(response)


@pytest.mark.django_db
def test_a_body_of_thousands_of_gzip_members_is_refused_cheaply(write_client):
    # Given a body of 20,000 tiny gzip members (each costs a decoder)
    body = gzip.compress(b"[]", mtime=0) * 20_000

    # When it is posted / Then it is refused as malformed, not inflated member by member
    response = write_client.post(
        "/v1/batch", data=body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


@pytest.mark.django_db
def test_the_admin_refuses_bodies_over_the_limit(superuser_client):
    # Given a staff member posting a 2 MB form to the admin (or anyone to its login)
    form = {"name": "x" * (2 * MB)}

    # Then both are 413 with the error shape, before a form is parsed
    assert_too_large(Client().post("/admin/login/", form))
    assert_too_large(superuser_client.post("/admin/segments/segment/add/", form))


@pytest.mark.django_db
def test_the_browsable_api_refuses_bodies_over_the_limit(staff_client):
    response = staff_client.post("/api/v1/segments", padded(2 * MB), format="json")
    assert_too_large(response)


@pytest.mark.django_db
def test_bodies_under_the_limit_still_pass(superuser_client):
    response = superuser_client.post("/admin/segments/segment/add/", {"name": "x" * 1000})
    assert response.status_code == 200  # the form is shown again with its errors
