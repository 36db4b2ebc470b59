import pytest
from rest_framework.test import APIClient


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/api/schema/", "/api/docs/", "/healthz", "/api/schema/?format=json"]
)
@pytest.mark.parametrize("key", [None, "garbage", "wk_nope"])
def test_probe(path, key, source):
    c = APIClient(raise_request_exception=False)
    if key:
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    r = c.get(path)
    print(
        path, key, r.status_code, r.get("Content-Type"), r.get("WWW-Authenticate"), r.content[:150]
    )
