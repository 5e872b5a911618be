"""The admin in headless Chromium against a live server: logging in, tenancy, pausing, the audit export and the
dashboard's charts."""

import csv
import hashlib
import io
import json

import pytest

from audit.models import AuditEvent
from mailboxes.models import Mailbox
from workspaces import roles
from workspaces import services as workspace_services

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator(make_user, acme, globex):
    """An operator of Acme and of Initech, who has no role in Globex."""
    initech = workspace_services.create_workspace(slug="initech", name="Initech", timezone="UTC")
    user = make_user("olive", workspace=acme.workspace, role="operator")
    roles.grant_role(user=user, workspace=initech, role="operator")
    return user


def test_an_operator_sees_only_their_workspaces_and_pauses_a_mailbox_with_a_reason(page, operator, acme, globex):
    tab = page.tab
    page.log_in("olive")

    assert page.path == "/"
    assert tab.inner_text("#dashboard-workspace") == "Acme"
    switcher = tab.locator("#id_dashboard_workspace option").all_inner_texts()
    assert switcher == ["Acme (acme)", "Initech (initech)"]
    assert "Globex" not in tab.inner_text("#content")
    assert "Nothing is paused." in tab.inner_text("#dash-paused")

    page.open("/mailboxes/mailbox/")
    listed = tab.locator("#result_list tbody tr").all_inner_texts()
    assert any(acme.mailbox.address in row for row in listed)
    assert not any(globex.mailbox.address in row for row in listed)
    row = tab.locator("#result_list tbody tr", has_text=acme.mailbox.address)
    row.locator("input.action-select").check()
    tab.select_option("select[name=action]", "pause_mailboxes")
    with tab.expect_navigation():
        tab.click("button[name=index]")

    assert "reason-confirmation" in tab.get_attribute("body", "class")
    assert acme.mailbox.address in tab.inner_text("#content")
    tab.fill("#id_reason", "Client asked to stop this campaign")
    with tab.expect_navigation():
        tab.click("input[type=submit][value='Pause these mailboxes']")
    assert "Paused 1 mailbox." in tab.inner_text("ul.messagelist")

    page.open("/")
    paused = tab.inner_text("#dash-paused")
    assert acme.mailbox.address in paused
    assert "Client asked to stop this campaign" in paused
    assert Mailbox.objects.get(pk=acme.mailbox.pk).status == "paused"
    assert not page.problems(), page.problems()


def test_an_operator_cannot_open_another_workspaces_dashboard(page, operator, globex):
    page.log_in("olive")

    response = page.tab.goto(page.base_url + f"/?workspace={globex.workspace.pk}")

    assert response.status == 404
    assert "Globex" not in page.tab.content()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_reviewer_lands_on_the_compliance_page_and_downloads_the_audit_export(page, make_user, acme, fmt):
    make_user("rita", workspace=acme.workspace, role="reviewer")
    tab = page.tab
    page.log_in("rita")

    assert page.path == "/compliance/"
    assert "Acme" in tab.inner_text("#content-main")
    with tab.expect_navigation():
        tab.click("#audit a:has-text('Export the audit log')")
    assert page.path == "/audit/auditevent/export/"
    tab.select_option("#id_format", fmt)
    with tab.expect_response(lambda r: r.url.endswith("/audit/auditevent/export/")
                             and r.request.method == "POST") as answer, tab.expect_download() as download:
        tab.click("input[type=submit][value=Download]")

    headers = answer.value.all_headers()
    assert download.value.suggested_filename == f"audit-acme.{fmt}"
    body = download.value.path().read_bytes()
    assert headers["x-audit-digest"] == f"sha256={hashlib.sha256(body).hexdigest()}"
    rows = ([json.loads(line) for line in body.decode().splitlines()] if fmt == "jsonl"
            else list(csv.DictReader(io.StringIO(body.decode()))))
    assert len(rows) == int(headers["x-audit-rows"]) > 0
    assert {"role.granted"} <= {row["action"] for row in rows}
    assert AuditEvent.objects.filter(workspace=acme.workspace, action="audit.exported").count() == 1


def test_the_dashboard_draws_its_charts_without_console_errors(page, make_user, acme):
    from tests.admin.test_dashboard import message, outcome

    for days_ago in (0, 0, 1, 3, 3, 3):
        message(acme.workspace, "delivered", days_ago=days_ago, mailbox=acme.mailbox)
    outcome(message(acme.workspace, "bounced", mailbox=acme.mailbox), "message.bounced", bounce_type="hard")
    make_user("owen", workspace=acme.workspace, role="owner")
    tab = page.tab
    page.log_in("owen")

    assert page.path == "/"
    for chart in ("#dash-sends", "#dash-hard-bounces", "#dash-complaints"):
        svg = tab.locator(f"{chart} svg")
        assert svg.count() == 1, chart
        box = svg.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 50, (chart, box)
    assert tab.locator("#dash-sends svg rect").count() == 4  # 3 days delivered + today's bounce
    assert tab.locator("#dash-hard-bounces .dash-threshold").count() == 1
    assert tab.locator("#dash-hard-bounces circle.dash-over").count() == 1
    assert "7 messages scheduled" in tab.inner_text("#dash-sends figcaption")
    assert page.console_errors == [] and page.page_errors == [], page.problems()
    assert page.failed_responses == [], page.failed_responses
