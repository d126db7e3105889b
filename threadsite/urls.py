from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import include, path

from threadsite import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("v1/", include("threadsite.api.urls")),  # the Assistants-compatible API
    path("", include("threadsite.dashboard.urls")),
]
