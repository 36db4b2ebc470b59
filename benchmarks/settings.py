"""Settings for benchmark servers: the product's settings plus comparison endpoints."""

from cdp.settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.urls"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
SECURE_SSL_REDIRECT = False
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
# wrk's connections stand for many browsers from one address: the limiters still count
# (their cost is part of the measurement) but never refuse.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_THROTTLE_RATES": dict.fromkeys(("write_key", "secret_key", "client_ip"), "1000000/s"),
}

# The soak benchmark scrapes the server's /metrics from 127.0.0.1.
CDP_METRICS_ALLOW_LOOPBACK = True
