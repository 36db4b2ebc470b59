from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views import defaults
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cdp.errors import json_404, json_500, page_503
from cdp.health import HealthzApi, ReadyzApi
from cdp.login_throttle import admin_login
from cdp.metrics import metrics_view
from consent.api import (
    ConsentApi,
    PrivacyRequestDetailApi,
    PrivacyRequestExportApi,
    PrivacyRequestsApi,
)
from experiments.api import (
    ExperimentDetailApi,
    ExperimentPauseApi,
    ExperimentResultsApi,
    ExperimentsApi,
    ExperimentStartApi,
    ExperimentStopApi,
)
from profiles.api import EventsApi, ProfileDetailApi, ProfileLookupApi
from profiles.segment_api import (
    SegmentBatchApi,
    SegmentBatchShortApi,
    SegmentMessageApi,
    SegmentMessageShortApi,
    SegmentSettingsApi,
)
from recommendations.api import RecommendationsApi
from rules.api import DecideApi, RuleDetailApi, RulesApi, SlotDetailApi, SlotsApi
from segments.api import SegmentDetailApi, SegmentMembersApi, SegmentPreviewApi, SegmentsApi

api_v1 = [
    path("events", EventsApi.as_view(), name="events"),
    path("profiles", ProfileLookupApi.as_view(), name="profile-lookup"),
    path("profiles/<uuid:profile_id>", ProfileDetailApi.as_view(), name="profile-detail"),
    path("segments", SegmentsApi.as_view(), name="segments"),
    path("segments/preview", SegmentPreviewApi.as_view(), name="segments-preview"),
    path("segments/<slug:slug>", SegmentDetailApi.as_view(), name="segment-detail"),
    path("segments/<slug:slug>/members", SegmentMembersApi.as_view(), name="segment-members"),
    path("decide", DecideApi.as_view(), name="decide"),
    path("recommendations", RecommendationsApi.as_view(), name="recommendations"),
    path("slots", SlotsApi.as_view(), name="slots"),
    path("slots/<slug:key>", SlotDetailApi.as_view(), name="slot-detail"),
    path("rules", RulesApi.as_view(), name="rules"),
    path("rules/<slug:key>", RuleDetailApi.as_view(), name="rule-detail"),
    path("experiments", ExperimentsApi.as_view(), name="experiments"),
    path("experiments/<slug:key>", ExperimentDetailApi.as_view(), name="experiment-detail"),
    path("experiments/<slug:key>/start", ExperimentStartApi.as_view(), name="experiment-start"),
    path("experiments/<slug:key>/pause", ExperimentPauseApi.as_view(), name="experiment-pause"),
    path("experiments/<slug:key>/stop", ExperimentStopApi.as_view(), name="experiment-stop"),
    path(
        "experiments/<slug:key>/results",
        ExperimentResultsApi.as_view(),
        name="experiment-results",
    ),
    path("consent", ConsentApi.as_view(), name="consent"),
    path("privacy/requests", PrivacyRequestsApi.as_view(), name="privacy-requests"),
    path(
        "privacy/requests/<uuid:request_id>",
        PrivacyRequestDetailApi.as_view(),
        name="privacy-request-detail",
    ),
    path(
        "privacy/requests/<uuid:request_id>/export",
        PrivacyRequestExportApi.as_view(),
        name="privacy-request-export",
    ),
]

# Segment-compatible tracking API (docs/segment.md), with analytics.js's short aliases.
_SEGMENT_TYPES = ["track", "identify", "page", "screen", "alias", "group"]
segment_v1 = [
    path("batch", SegmentBatchApi.as_view(), name="segment-batch"),
    path("b", SegmentBatchShortApi.as_view(), name="segment-b"),
    *(
        path(kind, SegmentMessageApi.as_view(message_type=kind), name=f"segment-{kind}")
        for kind in _SEGMENT_TYPES
    ),
    *(
        path(kind[0], SegmentMessageShortApi.as_view(message_type=kind), name=f"segment-{kind[0]}")
        for kind in _SEGMENT_TYPES
    ),
    path(
        "projects/<str:write_key>/settings",
        SegmentSettingsApi.as_view(),
        name="segment-settings",
    ),
]

urlpatterns = [
    # Before the admin's own URLs: its login, refusing locked-out attempts.
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", HealthzApi.as_view(), name="healthz"),
    path("readyz", ReadyzApi.as_view(), name="readyz"),
    # Prometheus (operators: token, staff or loopback); not in the OpenAPI document.
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include(api_v1)),
    path("v1/", include(segment_v1)),
    path("demo/", include("storefront.urls")),
    path("", RedirectView.as_view(url="/demo/", permanent=False), name="root"),
]


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith(("/api/", "/v1/")):
        return json_404(request, exception)
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if request.path.startswith(("/api/", "/v1/")):
        return json_500(request)
    return page_503(request) or defaults.server_error(request)
