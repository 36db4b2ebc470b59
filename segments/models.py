"""Segments, their memberships and size history, and per-profile model scores."""

from __future__ import annotations

from django.db import models

from cdp.models import TrackedJob


class RefreshPolicy(models.TextChoices):
    REALTIME = "realtime", "Real time (on events) and on schedule"
    SCHEDULED = "scheduled", "On schedule only"
    MANUAL = "manual", "Manual recompute only"


class Segment(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    condition = models.JSONField(help_text="A condition tree (docs/conditions.md).")
    priority = models.IntegerField(default=0, help_text="Higher wins inside an exclusive group.")
    exclusive_group = models.SlugField(
        max_length=100,
        blank=True,
        help_text="A profile matching several segments of one group belongs only to the highest-priority one.",
    )
    active = models.BooleanField(default=True)
    refresh = models.CharField(
        max_length=20, choices=RefreshPolicy.choices, default=RefreshPolicy.REALTIME
    )
    size = models.PositiveIntegerField(default=0, editable=False)
    computed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "slug"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """Derived data, rewritten by every recompute. The foreign keys are not enforced by
    the database (`db_constraint=False`): PostgreSQL checks them with one trigger and one
    row lock on the profile per inserted row, at commit, which was more than half of a
    first recompute over 1M profiles (docs/benchmarks.md). Rows only ever come from a
    query over live profiles; deletes cascade through the ORM (profile erasure and
    merges delete memberships explicitly); a row orphaned by a profile deleted during a
    recompute is removed by the next one."""

    segment = models.ForeignKey(
        Segment, on_delete=models.CASCADE, related_name="memberships", db_constraint=False
    )
    profile = models.ForeignKey(
        "profiles.Profile", on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    since = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "profile"], name="membership_uniq"),
        ]
        indexes = [models.Index(fields=["profile"], name="membership_profile_idx")]

    def __str__(self) -> str:
        return f"{self.segment_id}:{self.profile_id}"


class SegmentSize(models.Model):
    """One point of a segment's size history (after every recompute)."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="sizes")
    at = models.DateTimeField(db_index=True)
    size = models.PositiveIntegerField()
    added = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.segment_id}@{self.at:%Y-%m-%d %H:%M}={self.size}"


class ProfileScore(models.Model):
    """A predictive model's score for a profile (written by the ML work; read by `score`)."""

    # Not enforced by the database, like Membership (a scoring run writes a row per
    # profile); erasure and merges delete scores explicitly.
    profile = models.ForeignKey(
        "profiles.Profile", on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    # A predictor's key (score = probability) or a clustering's key (score = the
    # profile's stable cluster number).
    model = models.SlugField(max_length=100)
    score = models.FloatField()
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "profile"], name="profile_score_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.model}={self.score:.3f}"


class RecomputeRun(models.Model):
    """One batch recompute (scheduled, from the admin, or from the command), with its
    progress: the admin shows it while a worker runs it."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    slugs = models.JSONField(
        null=True, blank=True, help_text="Only these segments (null: all active)."
    )
    requested_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    current = models.SlugField(max_length=100, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["status", "created_at"], name="recompute_run_status_idx")]

    def __str__(self) -> str:
        return f"recompute #{self.pk} {self.status} {self.done}/{self.total}"


# --- Clustering and predictive models -----------------------------------------------------


class Scaling(models.TextChoices):
    ROBUST = "robust", "Robust (median and IQR)"
    STANDARD = "standard", "Standard (mean and standard deviation)"


class Outliers(models.TextChoices):
    IQR_CLIP = "iqr_clip", "Clip to 1.5 IQR beyond the quartiles"
    IQR_REMOVE = "iqr_remove", "Leave out of the fit beyond 1.5 IQR"
    ZSCORE_CLIP = "zscore_clip", "Clip to 3 standard deviations"
    ZSCORE_REMOVE = "zscore_remove", "Leave out of the fit beyond 3 standard deviations"
    NONE = "none", "Keep as they are"


class Clustering(models.Model):
    """A behavioral clustering: each of its clusters is a segment (`<key>-<number>`)."""

    class Algorithm(models.TextChoices):
        KMEANS = "kmeans", "K-Means"
        MINIBATCH_KMEANS = "minibatch_kmeans", "Mini-batch K-Means"
        AGGLOMERATIVE = "agglomerative", "Agglomerative (Ward)"
        DBSCAN = "dbscan", "DBSCAN"
        HDBSCAN = "hdbscan", "HDBSCAN"

    key = models.SlugField(
        max_length=60,
        unique=True,
        help_text="Names the cluster segments (<key>-1, <key>-2, …) and the score that holds "
        "each profile's cluster number.",
    )
    name = models.CharField(max_length=200)
    algorithm = models.CharField(max_length=20, choices=Algorithm.choices, default="kmeans")
    k_min = models.PositiveSmallIntegerField(default=2)
    k_max = models.PositiveSmallIntegerField(default=10)
    features = models.JSONField(
        default=list, blank=True, help_text="Feature names to use (empty: all). See docs/ml.md."
    )
    scaling = models.CharField(max_length=10, choices=Scaling.choices, default="robust")
    outliers = models.CharField(max_length=20, choices=Outliers.choices, default="iqr_clip")
    pca_components = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Reduce to this many principal components (empty: no PCA)."
    )
    lookback_days = models.PositiveSmallIntegerField(default=180)
    sample_size = models.PositiveIntegerField(
        default=10_000, help_text="Profiles sampled for density/hierarchical fits and stability."
    )
    eps = models.FloatField(default=0.5, help_text="DBSCAN neighbourhood radius (model space).")
    min_samples = models.PositiveSmallIntegerField(default=10)
    retrain_every_days = models.PositiveSmallIntegerField(
        default=7, help_text="Re-run on schedule every this many days (0: only by hand)."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(k_min__gte=2) & models.Q(k_max__gte=models.F("k_min")),
                name="clustering_k_range",
            )
        ]

    def __str__(self) -> str:
        return self.name


class ClusteringRun(TrackedJob):
    clustering = models.ForeignKey(Clustering, on_delete=models.CASCADE, related_name="runs")
    as_of = models.DateTimeField(null=True, blank=True)
    profiles = models.PositiveIntegerField(default=0)
    k = models.PositiveSmallIntegerField(null=True, blank=True)
    silhouette = models.FloatField(null=True, blank=True)
    # [{"k", "silhouette", "inertia"}] over the range tried
    scores_by_k = models.JSONField(default=list, blank=True)
    stability = models.JSONField(default=dict, blank=True)
    outlier_report = models.JSONField(default=dict, blank=True)
    noise_share = models.FloatField(null=True, blank=True)
    # the fitted transform (segments.ml.transform.Transform) and centroids in model space
    transform = models.JSONField(null=True, blank=True)
    centroids = models.JSONField(null=True, blank=True)
    # [{"number", "segment", "label", "size", "centroid": {feature: value}, "z": {...}}]
    clusters = models.JSONField(default=list, blank=True)
    # [[x, y, number]]: a 2-D projection of a sample (the scatter)
    projection = models.JSONField(default=list, blank=True)
    is_current = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["clustering"],
                condition=models.Q(is_current=True),
                name="clustering_one_current_run",
            )
        ]

    def __str__(self) -> str:
        return f"{self.clustering_id} run #{self.pk} {self.status}"


class Predictor(models.Model):
    """A predictive model whose probability is the score `<key>` of every profile."""

    class Target(models.TextChoices):
        CHURN = "churn", "Churn: no activity in the next N days"
        PURCHASE = "purchase", "Purchase in the next N days"
        EVENT = "event", "This event in the next N days"

    class Algorithm(models.TextChoices):
        RANDOM_FOREST = "random_forest", "Random forest"
        GRADIENT_BOOSTING = "gradient_boosting", "Gradient boosting (histogram)"
        LOGISTIC_REGRESSION = "logistic_regression", "Logistic regression"

    key = models.SlugField(
        max_length=100, unique=True, help_text='The score name in conditions: {"score": key}.'
    )
    name = models.CharField(max_length=200)
    target = models.CharField(max_length=10, choices=Target.choices, default="churn")
    target_event = models.CharField(
        max_length=200, blank=True, help_text="The track event, for the event target."
    )
    horizon_days = models.PositiveSmallIntegerField(default=30)
    lookback_days = models.PositiveSmallIntegerField(default=180)
    algorithm = models.CharField(
        max_length=20, choices=Algorithm.choices, default="gradient_boosting"
    )
    threshold = models.FloatField(
        default=0.5, help_text="The probability a segment or rule would typically use."
    )
    retrain_every_days = models.PositiveSmallIntegerField(default=7)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(threshold__gte=0) & models.Q(threshold__lte=1),
                name="predictor_threshold_0_1",
            ),
            models.CheckConstraint(
                condition=models.Q(horizon_days__gte=1), name="predictor_horizon_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class PredictorVersion(TrackedJob):
    predictor = models.ForeignKey(Predictor, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    algorithm = models.CharField(max_length=20, blank=True)
    cutoff = models.DateTimeField(null=True, blank=True)
    # the feature spec it was trained with (so scoring builds the same columns)
    feature_names = models.JSONField(default=list, blank=True)
    categories = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # joblib pickle of the fitted estimator; written and read only by this application
    model_blob = models.BinaryField(null=True, blank=True, editable=False)
    is_current = models.BooleanField(default=False)
    decision = models.CharField(max_length=300, blank=True)
    scored_at = models.DateTimeField(null=True, blank=True)
    scored_profiles = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["predictor", "version"], name="predictor_version_uniq"),
            models.UniqueConstraint(
                fields=["predictor"],
                condition=models.Q(is_current=True),
                name="predictor_one_current_version",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.predictor_id} v{self.version} {self.status}"
