"""Two roles: staff change things; viewers (not staff, or staff in the "viewers" group)
see everything and get the 403 page on every write."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from stores import new_message, new_run, new_thread
from threadsite.dashboard.permissions import READ_ONLY_MESSAGE

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["not staff", "staff in viewers"])
def viewer_client(request, client, django_user_model):
    if request.param == "not staff":
        user = django_user_model.objects.create_user(username="vic")
    else:
        user = django_user_model.objects.create_user(username="vic", is_staff=True)
        user.groups.add(Group.objects.get_or_create(name="viewers")[0])
    client.force_login(user)
    return client


@pytest.fixture
def world(thread_store):
    thread = thread_store.create_thread(new_thread({"ticket": "1"}))
    thread_store.append_message(thread.id, new_message(thread.id, "user", "hello"))
    run = thread_store.create_run(thread.id, new_run(thread.id))
    return thread_store, thread, run


def snapshot(store, thread, run):
    return (
        [t.id for t in store.list_threads().items],
        store.get_thread(thread.id).metadata,
        [m.text for m in store.list_messages(thread.id)],
        [(r.id, r.status) for r in store.list_runs(thread.id)],
        store.get_run(thread.id, run.id).status,
    )


WRITES = [
    ("get", "thread-create", False, {}),
    ("post", "thread-create", False, {"rows": "4", "key_0": "x", "value_0": "y"}),
    ("post", "thread-messages", True, {"text": "sneaky"}),
    ("post", "thread-metadata", True, {"rows": "4", "key_0": "x", "value_0": "y"}),
    ("post", "run-create", True, {"model": "echo", "instructions": ""}),
    ("post", "run-cancel", "run", {}),
]


@pytest.mark.parametrize(("method", "name", "args", "data"), WRITES)
def test_viewers_get_the_403_page_on_every_write(viewer_client, world, method, name, args, data):
    store, thread, run = world
    before = snapshot(store, thread, run)
    url_args = {False: [], True: [thread.id], "run": [thread.id, run.id]}[args]

    response = getattr(viewer_client, method)(reverse(name, args=url_args), data)

    assert response.status_code == 403
    html = response.content.decode()
    assert "<h1>Not allowed</h1>" in html
    assert READ_ONLY_MESSAGE.split(":")[0] in html
    assert snapshot(store, thread, run) == before


def test_viewers_get_the_403_page_on_htmx_writes_too(viewer_client, world):
    store, thread, run = world

    response = viewer_client.post(
        reverse("thread-messages", args=[thread.id]),
        {"text": "sneaky"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 403
    assert [m.text for m in store.list_messages(thread.id)] == ["hello"]


def test_viewers_see_every_page(viewer_client, world):
    _, thread, run = world

    for url in [
        reverse("overview"),
        reverse("thread-list"),
        reverse("thread-detail", args=[thread.id]),
        reverse("thread-messages", args=[thread.id]) + "?before=999999",
        reverse("thread-export-json", args=[thread.id]),
        reverse("thread-export-md", args=[thread.id]),
        reverse("run-detail", args=[thread.id, run.id]),
    ]:
        assert viewer_client.get(url).status_code == 200, url


def test_viewers_are_shown_no_forms_that_change_things(viewer_client, world):
    _, thread, _ = world

    for url in [reverse("thread-list"), reverse("thread-detail", args=[thread.id])]:
        html = viewer_client.get(url).content.decode()
        assert 'method="post"' in html  # the sign-out form only
        assert html.count('method="post"') == 1, url
        assert reverse("thread-create") not in html


def test_staff_may_write(staff_client, world):
    store, thread, _ = world

    assert staff_client.get(reverse("thread-create")).status_code == 200
    response = staff_client.post(reverse("thread-messages", args=[thread.id]), {"text": "ok"})
    # The thread has a queued run, so the post is refused as busy, not forbidden.
    assert response.status_code == 409
