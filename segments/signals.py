"""Hooks other apps use to follow memberships (e.g. rules drop cached snapshots).

- `memberships_changed(profile_ids)`: sent after a real-time refresh committed changes
  for these profiles.
- `segments_recomputed(slugs)`: sent after a batch recompute (memberships of any number
  of profiles may have changed).
- `scores_changed(model, profile_ids)`: sent after model scores were written (a
  clustering run, a scoring run, or real-time assignment); `profile_ids` is None when
  any number of profiles may have changed.
- `segment_usage(slug)`: asked before a segment is deleted; a receiver returns a list of
  what uses it (e.g. ["rule cart-reminder"]), and a used segment is not deleted.
"""

from django.dispatch import Signal

memberships_changed = Signal()
segments_recomputed = Signal()
segment_usage = Signal()
scores_changed = Signal()
