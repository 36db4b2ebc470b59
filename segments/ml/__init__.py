"""Behavioral clustering and predictive scores.

- `features`: per-profile behavioral features from raw events as of a moment (so a
  model trained at a cutoff never sees what came after it), streamed in chunks;
- `transform`: outlier handling, scaling and PCA as a small, JSON-stored transform;
- `clustering`, `predictive`: the model fitting (scikit-learn), pure computation;
- `services`, `selectors`: runs and versions, scores and cluster segments in the database.
"""
