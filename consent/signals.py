"""Hooks other apps use to follow consent.

- `consent_changed(profile_ids)`: sent when new consent records were written for these
  profiles (inside the writing transaction; receivers that touch caches defer to commit).
"""

from django.dispatch import Signal

consent_changed = Signal()
