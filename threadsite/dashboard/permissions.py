"""Two roles: staff may post, start and cancel; viewers (and any signed-in account that is
not staff) may look at everything and change nothing."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase

VIEWERS_GROUP = "viewers"
READ_ONLY_MESSAGE = (
    "Your account can look but not change anything: ask an administrator for staff access."
)

View = TypeVar("View", bound=Callable[..., HttpResponseBase])


def can_write(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Staff who are not in the viewers group may change things."""
    if not (user.is_authenticated and user.is_active and getattr(user, "is_staff", False)):
        return False
    cached = getattr(user, "cached_can_write", None)  # set by threadsite.auth_cache
    if cached is not None:
        return bool(cached)
    return query_can_write(user)


def query_can_write(user: AbstractBaseUser | AnonymousUser) -> bool:
    """can_write, asking the database for the user's groups."""
    if not (user.is_authenticated and user.is_active and getattr(user, "is_staff", False)):
        return False
    return not user.groups.filter(name=VIEWERS_GROUP).exists()  # type: ignore[union-attr]


def writer_required(view: View) -> View:
    """Refuse the request with the 403 page unless the user may change things."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not can_write(request.user):
            raise PermissionDenied(READ_ONLY_MESSAGE)
        return view(request, *args, **kwargs)

    return checked  # type: ignore[return-value]


def roles(request: HttpRequest) -> dict[str, bool]:
    """Template context: whether to show the forms that change things."""
    if not hasattr(request, "user"):
        return {"can_write": False}
    return {"can_write": can_write(request.user)}
