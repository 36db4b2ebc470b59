from django.urls import include, path

from benchmarks.views import TrivialApi, bare_copy

urlpatterns = [
    path("bench/trivial", TrivialApi.as_view()),
    path("bench/copy", bare_copy),
    path("", include("cdp.urls")),
]
