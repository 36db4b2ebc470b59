"""Hooks other apps use to follow profiles.

- `profile_merging(into, other)`: sent inside the merge transaction, after events and
  identities moved; a receiver moves its own rows from `other` to `into` (memberships,
  consent, assignments…). Raising aborts the whole merge.
- `events_ingested(profile_ids, event_names)`: sent after the ingestion transaction
  commits, once per batch, so real-time consumers (segments) re-evaluate those profiles.
"""

from django.dispatch import Signal

profile_merging = Signal()
events_ingested = Signal()
