"""`manage.py recompute_segments`: progress on stderr, one summary line per segment."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from segments import services
from segments.models import Membership, Segment, SegmentSize

pytestmark = pytest.mark.django_db

PRO = {"trait": "plan", "op": "eq", "value": "pro"}


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal (progress bars draw only on one)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def segments(ingest) -> None:
    t0 = (timezone.now() - timedelta(hours=1)).isoformat()
    ingest(
        {"type": "identify", "user_id": "ann", "traits": {"plan": "pro"}, "timestamp": t0},
        {"type": "identify", "user_id": "bob", "traits": {"plan": "free"}, "timestamp": t0},
    )
    for slug, condition in [
        ("pros", PRO),
        ("everyone", {"all": []}),
        ("pro-fans", {"segment": "pros"}),
    ]:
        services.segment_save(
            segment=Segment(slug=slug, name=slug, condition=condition), actor="test"
        )
    services.segment_save(
        segment=Segment(slug="off", name="off", condition=PRO, active=False), actor="test"
    )


def test_recompute_all_prints_a_summary_line_per_segment_and_progress_on_stderr(segments):
    out, err = io.StringIO(), Terminal()

    call_command("recompute_segments", stdout=out, stderr=err)

    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    summary = {line.split(":")[0]: line for line in lines}
    assert set(summary) == {"pros", "everyone", "pro-fans"}
    assert re.fullmatch(r"pros: 1 members \(\+1 -0\) in \d+ ms", summary["pros"])
    assert re.fullmatch(r"everyone: 2 members \(\+2 -0\) in \d+ ms", summary["everyone"])
    assert re.fullmatch(r"pro-fans: 1 members \(\+1 -0\) in \d+ ms", summary["pro-fans"])
    # progress went to stderr, not into the summary
    assert "3/3" in err.getvalue()
    assert "segment" in err.getvalue()
    assert "3/3" not in out.getvalue()
    assert Membership.objects.filter(segment__slug="off").count() == 0
    assert SegmentSize.objects.count() == 3


def test_recompute_named_segments_only(segments):
    out = io.StringIO()

    call_command("recompute_segments", "pros", stdout=out, stderr=io.StringIO())

    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["pros"]
    assert set(SegmentSize.objects.values_list("segment__slug", flat=True)) == {"pros"}


def test_second_run_reports_no_changes(segments):
    call_command("recompute_segments", stdout=io.StringIO(), stderr=io.StringIO())
    out = io.StringIO()
    call_command("recompute_segments", "everyone", stdout=out, stderr=io.StringIO())
    assert re.fullmatch(r"everyone: 2 members \(\+0 -0\) in \d+ ms\n", out.getvalue())


@pytest.mark.parametrize("slugs", [["ghost"], ["pros", "ghost"], ["off"]])
def test_unknown_or_inactive_slug_is_a_command_error(segments, slugs):
    with pytest.raises(CommandError, match=f"no active segment\\(s\\): {slugs[-1]}"):
        call_command("recompute_segments", *slugs, stdout=io.StringIO(), stderr=io.StringIO())
    assert not SegmentSize.objects.exists()
