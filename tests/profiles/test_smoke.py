from profiles.models import Event, Profile
from tests.conftest import post_events


def test_single_event_is_stored(write_client):
    resp = post_events(
        write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "a1"}
    )
    assert resp.status_code == 202, resp.json()
    assert resp.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "dropped": 0}
    assert Event.objects.count() == 1
    p = Profile.objects.get()
    assert p.event_count == 1
