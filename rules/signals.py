"""Hooks other apps use to follow decisions.

- `decisions_logged(rows)`: sent inside the transaction that stores a batch of logged
  decisions (dicts with the Decision fields; `experiment` names an experiment for the
  experiments' exposures).
"""

from django.dispatch import Signal

decisions_logged = Signal()
