from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from stores import new_thread

pytestmark = pytest.mark.browser


def test_signing_in_through_the_form_lands_on_the_page_asked_for(
    page: Page, live_server, staff_user, password, thread_store
):
    thread = thread_store.create_thread(new_thread({"customer": "<Acme & Co>"}))

    page.goto(f"{live_server.url}/threads/")

    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/threads/$"))
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(f"{live_server.url}/threads/")
    expect(page.get_by_role("heading", name="Threads", exact=True)).to_be_visible()
    row = page.get_by_role("row").filter(has_text=thread.id)
    expect(row).to_contain_text("<Acme & Co>")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert page.evaluate("() => typeof window.htmx") == "object"


def test_signing_in_from_the_home_page_lands_on_the_overview(
    page: Page, live_server, staff_user, password
):
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(f"{live_server.url}/")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Overview")).to_have_attribute("aria-current", "page")
    expect(nav.get_by_role("link", name="Threads")).to_be_visible()
    expect(nav.get_by_role("link", name="New thread")).to_be_visible()


def test_a_wrong_password_keeps_you_on_the_login_page(page: Page, live_server, staff_user):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("alert")).to_contain_text("enter a correct username and password")
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))


def test_signing_out_returns_to_the_login_page(page: Page, live_server, staff_user, password):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").click()

    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    page.goto(f"{live_server.url}/threads/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/threads/$"))


def test_a_watched_run_page_goes_to_sign_in_when_the_account_is_deactivated(
    signed_in_page: Page, live_server, staff_user, password, thread_store
):
    """The poll's answer after `deactivate` sends the whole page to the sign-in page,
    instead of the sign-in form appearing inside the run's live block; signing in again
    (re-enabled) comes back to the run."""
    from django.core.management import call_command

    from stores import new_run

    page = signed_in_page
    thread = thread_store.create_thread(new_thread())
    run = thread_store.create_run(thread.id, new_run(thread.id))
    run_path = f"/threads/{thread.id}/runs/{run.id}/"
    page.goto(f"{live_server.url}{run_path}")
    expect(page.locator("#run-live")).to_be_visible()

    call_command("deactivate", staff_user.get_username())

    expect(page).to_have_url(re.compile(rf"/accounts/login/\?next={re.escape(run_path)}$"))
    assert page.locator("#run-live").count() == 0
    call_command("adduser", staff_user.get_username(), "--role", "staff")
    page.get_by_label("Username").fill(staff_user.get_username())
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_server.url}{run_path}")
