"""Settings: one module, everything from the environment, safe embedded defaults.

With no variables set the product runs embedded: SQLite file, local-memory cache and
Celery tasks run eagerly in-process. Production is switched on by variables only:
DATABASE_URL (PostgreSQL), REDIS_URL (cache + Celery broker), DEBUG=false,
SECRET_KEY, ALLOWED_HOSTS, SECURE_SSL_REDIRECT and friends.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import environ
from csp.constants import NONCE, NONE, SELF

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=True)
# The embedded default key is only for local use; production sets SECRET_KEY.
SECRET_KEY = env.str(
    "SECRET_KEY", default="insecure-embedded-default-key-change-me-in-production-0123456789"
)
# Rotation: the old key here keeps sessions and signed links valid while it is listed.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "cdp",
    "profiles",
    "consent",
    "segments",
    "rules",
    "experiments",
    "recommendations",
    "storefront",
]

MIDDLEWARE = [
    # First: its request metrics and access log cover every other middleware.
    "cdp.observability.RequestObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "cdp.security.BodyLimitMiddleware",
    "cdp.security.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "cdp.security.ContentSecurityPolicyMiddleware",
    "cdp.middleware.ApiCorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "cdp.urls"
WSGI_APPLICATION = "cdp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the dev server's readers run beside a Celery-eager writer.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
    # Tests get a file too, not Django's shared-cache in-memory database: there a second
    # connection (the live server's threads, a Celery worker thread) fails at once with
    # "table is locked" instead of waiting, which the product never does.
    DATABASES["default"].setdefault("TEST", {})
    DATABASES["default"]["TEST"].setdefault(
        "NAME", str(Path(tempfile.gettempdir()) / f"cdp-test-{os.getpid()}.sqlite3")
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"

# --- Cache and Celery --------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Redis has no acks: a task whose whole worker died (SIGKILL, OOM, a lost node) goes back
# to the queue only after this many seconds, so it must outlast the longest task (model
# training, a full recompute), or a running task is handed to a second worker too. A
# killed pool child is re-queued at once by its parent (reject on worker lost).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "profiles-rfm-scores": {"task": "profiles.tasks.rfm_scores_compute", "schedule": 3600.0},
    "privacy-exports-expire": {"task": "consent.tasks.privacy_exports_expire", "schedule": 3600.0},
    "segments-recompute": {"task": "segments.tasks.segments_recompute", "schedule": 3600.0},
    "segments-sweep-windows": {"task": "segments.tasks.segments_sweep_windows", "schedule": 300.0},
    "rules-decisions-drain": {"task": "rules.tasks.decisions_drain", "schedule": 2.0},
    "rules-decisions-attribute": {"task": "rules.tasks.decisions_attribute", "schedule": 60.0},
    # Re-runs clusterings and retrains predictors when due, and scores every profile.
    "segments-ml-daily": {"task": "segments.tasks.ml_retrain_due", "schedule": 86400.0},
    "recommendations-catalog": {
        "task": "recommendations.tasks.reco_catalog_sync",
        "schedule": 60.0,
    },
    # Retrains every recommendation model; the new version is served only if better.
    "recommendations-train": {"task": "recommendations.tasks.reco_train", "schedule": 86400.0},
    "experiments-results": {
        "task": "experiments.tasks.experiments_results_refresh_all",
        "schedule": 600.0,
    },
    "experiments-results-full": {
        "task": "experiments.tasks.experiments_results_refresh_all",
        "schedule": 86400.0,
        "kwargs": {"full": True},
    },
}

# --- Security switches (production turns DEBUG off and these on by default) ---------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# The load balancer's health checks come in over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
# The HTML pages' policy (cdp.security; docs/operations.md "Security"). Scripts only from
# this origin, inline ones only with the request's nonce (`{{ request.csp_nonce }}`); the
# admin additionally allows style attributes. The JSON API sends none (a JSON answer runs
# nothing, and the browser SDK's CORS calls are governed by the shop page's policy).
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/", "/v1/", "/healthz", "/readyz", "/metrics"],
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedStaticFilesStorage"
    },
}

# Request bodies: the events endpoint enforces its own limits (413) before Django's.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# --- Logs and metrics (docs/operations.md "Metrics and logs") ------------------------------
# LOG_FORMAT=json (production default): one JSON object a line; plain: for a terminal.
# Every line goes through the PII filter and a scrubbing formatter (cdp.observability).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain" if DEBUG else "json")
if LOG_FORMAT not in ("json", "plain"):
    raise ValueError(f"LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}")
# One access line per request (route pattern, method, status, duration, request id).
CDP_ACCESS_LOG = env.bool("CDP_ACCESS_LOG", default=True)
# Bearer token for GET /metrics; unset: staff sessions and direct loopback calls only.
CDP_METRICS_TOKEN = env.str("CDP_METRICS_TOKEN", default="")
# Direct loopback calls may scrape without the token: on by default only with DEBUG.
CDP_METRICS_ALLOW_LOOPBACK = env.bool("CDP_METRICS_ALLOW_LOOPBACK", default=DEBUG)
# Prometheus scrapes the web process itself, over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [*SECURE_REDIRECT_EXEMPT, r"^metrics$"]
# Celery workers log through this configuration too, not Celery's own root handler.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_context": {"()": "cdp.observability.RequestContextFilter"},
        "pii": {"()": "cdp.observability.PiiScrubFilter"},
    },
    "formatters": {
        "plain": {"()": "cdp.observability.PlainFormatter"},
        "json": {"()": "cdp.observability.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_context", "pii"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own handlers (console in DEBUG, mail_admins) would print unscrubbed
        # copies: its records go to the root handler only.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        # runserver's own line repeats cdp.access's, with the raw path: errors only.
        "django.server": {"handlers": [], "level": "WARNING", "propagate": True},
    },
}

# --- API ----------------------------------------------------------------------------------
# Rate limits (docs/api.md "Rate limits"), "<requests>/<s|min|h|day>" or "off", e.g.
# CDP_RATE_LIMITS="write_key=20000/s,client_ip=100/s". A shop's whole browser traffic shares
# its write key, so that limit is high; one address is one browser (or one NAT).
RATE_LIMITS = {
    "write_key": "5000/s",
    "secret_key": "1000/s",
    "client_ip": "50/s",
    **env.dict("CDP_RATE_LIMITS", default={}),
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "cdp.auth.SourceKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["cdp.auth.IsStaff"],
    "DEFAULT_PARSER_CLASSES": ["cdp.parsers.FastJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "cdp.renderers.FastJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "cdp.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["cdp.throttles.ApiRateThrottle"],
    "DEFAULT_THROTTLE_RATES": RATE_LIMITS,
    # How many proxies in front of the app append to X-Forwarded-For; unset: the header
    # is ignored and the client is REMOTE_ADDR (set it behind a load balancer, or every
    # browser shares the proxy's address and its per-IP limit).
    "NUM_PROXIES": env.int("CDP_NUM_PROXIES", default=None),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CDP API",
    "DESCRIPTION": (
        "Customer data platform: event ingestion, profiles, decisions. "
        "Authenticate with `Authorization: Bearer <write or secret key>`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs are public and ignore any Authorization header (a stray key is not a 401).
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # pydantic emits JSON Schema 2020-12 (nullable as anyOf null), which is OpenAPI 3.1.
    "OAS_VERSION": "3.1.0",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "cdp.openapi.nullable_as_any_of",
        "cdp.openapi.throttled_and_unavailable",
    ],
}

# --- Product settings ---------------------------------------------------------------------
CDP = {
    # Keyed hash for PII used as identifiers (emails). Rotating it orphans email lookups.
    "PII_HASH_KEY": env.str("CDP_PII_HASH_KEY", default=SECRET_KEY),
    "SESSION_TIMEOUT_SECONDS": env.int("CDP_SESSION_TIMEOUT_SECONDS", default=30 * 60),
    "ENGAGEMENT_HALF_LIFE_DAYS": env.float("CDP_ENGAGEMENT_HALF_LIFE_DAYS", default=14.0),
    # Points an event adds to the engagement score before decay.
    "ENGAGEMENT_WEIGHTS": {
        "page": 1.0,
        "screen": 1.0,
        "track": 1.0,
        "identify": 0.0,
        "alias": 0.0,
        "add_to_cart": 3.0,
        "product_added": 3.0,
        "Product Added": 3.0,
        "purchase": 10.0,
        "order_completed": 10.0,
        "Order Completed": 10.0,
    },
    "PURCHASE_EVENTS": env.list(
        "CDP_PURCHASE_EVENTS", default=["purchase", "order_completed", "Order Completed"]
    ),
    # Timestamps further ahead of the server clock than this are clamped to received_at.
    "MAX_FUTURE_SKEW_SECONDS": env.int("CDP_MAX_FUTURE_SKEW_SECONDS", default=300),
    # Store raw email/phone (and IP) in traits and events? Off: they are kept only as
    # keyed hashes ("hmac:<hex>"), and as hashed identities for lookups.
    "RAW_PII": env.bool("CDP_RAW_PII", default=False),
    "PII_TRAITS": ("email", "phone"),
    # Strict GDPR deployments: every purpose is opt-in, whatever its own default says.
    "CONSENT_ALL_OPT_IN": env.bool("CDP_CONSENT_ALL_OPT_IN", default=False),
    "PRIVACY_DUE_DAYS": env.int("CDP_PRIVACY_DUE_DAYS", default=30),
    "PRIVACY_EXPORT_RETENTION_DAYS": env.int("CDP_PRIVACY_EXPORT_RETENTION_DAYS", default=7),
    "PRIVACY_EXPORT_DIR": env.str(
        "CDP_PRIVACY_EXPORT_DIR", default=str(BASE_DIR / "var" / "privacy-exports")
    ),
    "MAX_EVENT_BYTES": 32 * 1024,
    "MAX_BATCH_BYTES": 500 * 1024,
    "MAX_BATCH_EVENTS": 500,
    "SOURCE_KEY_CACHE_SECONDS": env.int("CDP_SOURCE_KEY_CACHE_SECONDS", default=30),
    # PostgreSQL work_mem for a segment recompute's transaction (its sorts and hashes).
    "RECOMPUTE_WORK_MEM": env.str("CDP_RECOMPUTE_WORK_MEM", default="64MB"),
    # Independent segments recomputed at once, each on its own connection (PostgreSQL).
    "RECOMPUTE_PARALLEL": env.int("CDP_RECOMPUTE_PARALLEL", default=2),
    # Decisions: a purchase this long after a decision counts as its conversion; these
    # events with properties.decision_id count as a click on it.
    "DECISION_ATTRIBUTION_SECONDS": env.int("CDP_DECISION_ATTRIBUTION_SECONDS", default=24 * 3600),
    "DECISION_CLICK_EVENTS": env.list(
        "CDP_DECISION_CLICK_EVENTS", default=["content_clicked", "decision_clicked"]
    ),
    # Behavioral features (segments.ml.features): which track events are cart adds, and
    # which carry a scroll depth in properties.percent.
    "ML_CART_EVENTS": env.list(
        "CDP_ML_CART_EVENTS", default=["add_to_cart", "product_added", "Product Added"]
    ),
    "ML_SCROLL_EVENTS": env.list(
        "CDP_ML_SCROLL_EVENTS", default=["scroll_depth", "page_scrolled", "Page Scrolled"]
    ),
    # Recommendations (docs/recommendations.md). Which track events are product views
    # (cart adds are ML_CART_EVENTS, purchases PURCHASE_EVENTS), and the properties that
    # name the item, first found wins.
    "RECO_VIEW_EVENTS": env.list(
        "CDP_RECO_VIEW_EVENTS", default=["product_viewed", "Product Viewed"]
    ),
    "RECO_ITEM_PROPERTIES": env.list(
        "CDP_RECO_ITEM_PROPERTIES", default=["product_id", "item_id", "sku"]
    ),
    # Interaction weights (view, cart add, purchase) and the half-lives of their decay.
    "RECO_WEIGHTS": (1.0, 3.0, 5.0),
    "RECO_HALF_LIFE_DAYS": env.float("CDP_RECO_HALF_LIFE_DAYS", default=30.0),
    "RECO_TRENDING_HALF_LIFE_DAYS": env.float("CDP_RECO_TRENDING_HALF_LIFE_DAYS", default=3.0),
    # Training reads this much history; a profile's recent items for serving this much.
    "RECO_LOOKBACK_DAYS": env.int("CDP_RECO_LOOKBACK_DAYS", default=180),
    "RECO_HISTORY_DAYS": env.int("CDP_RECO_HISTORY_DAYS", default=90),
    # Items bought this recently are never recommended again.
    "RECO_EXCLUDE_PURCHASED_DAYS": env.int("CDP_RECO_EXCLUDE_PURCHASED_DAYS", default=365),
    "RECO_NEIGHBOURS": env.int("CDP_RECO_NEIGHBOURS", default=50),
    # Rank of the factorized model (PureSVD); 0 leaves it out.
    "RECO_SVD_RANK": env.int("CDP_RECO_SVD_RANK", default=64),
    "RECO_HOLDOUT_FRACTION": env.float("CDP_RECO_HOLDOUT_FRACTION", default=0.2),
    # A new version is served only if its personal recall@10 on its held-out split is at
    # least the active version's (on that version's split) minus this tolerance.
    "RECO_PROMOTION_TOLERANCE": env.float("CDP_RECO_PROMOTION_TOLERANCE", default=0.0),
    # Default diversity weight of the re-ranking (0: by relevance only; 1: spread first).
    "RECO_DIVERSITY": env.float("CDP_RECO_DIVERSITY", default=0.3),
    # Web processes re-read the catalog (stock, titles) at most this often.
    "RECO_CATALOG_TTL_SECONDS": env.int("CDP_RECO_CATALOG_TTL_SECONDS", default=30),
    # A retrained model replaces the current one only if its held-out AUC is at least the
    # current model's on the same held-out profiles, minus this tolerance.
    "ML_PROMOTION_TOLERANCE": env.float("CDP_ML_PROMOTION_TOLERANCE", default=0.0),
}
