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
    assert "Paused 1 mailbox." in tab.inner_text(".messagelist")

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


CHART_DATA = """canvas => {
    const chart = Chart.getChart(canvas);
    return chart && {width: canvas.clientWidth, height: canvas.clientHeight,
                     datasets: chart.data.datasets.map(d => ({label: d.label, data: d.data,
                                                               dash: d.borderDash || null,
                                                               points: d.pointBackgroundColor || null}))};
}"""


def drawn_chart(tab, selector):
    """The Chart.js chart drawn in the canvas under `selector`: its size and datasets."""
    canvas = tab.locator(f"{selector} canvas")
    assert canvas.count() == 1, selector
    return canvas.evaluate(CHART_DATA)


def test_the_dashboard_draws_its_charts_without_console_errors(page, make_user, acme):
    from tests.admin.test_dashboard import message, outcome

    for days_ago in (0, 0, 1, 3, 3, 3):
        message(acme.workspace, "delivered", days_ago=days_ago, mailbox=acme.mailbox)
    outcome(message(acme.workspace, "bounced", mailbox=acme.mailbox), "message.bounced", bounce_type="hard")
    make_user("owen", workspace=acme.workspace, role="owner")
    tab = page.tab
    page.log_in("owen")

    assert page.path == "/"
    charts = {name: drawn_chart(tab, name) for name in ("#dash-sends", "#dash-hard-bounces", "#dash-complaints")}
    for name, chart in charts.items():
        assert chart and chart["width"] > 300 and chart["height"] > 50, (name, chart)
    bars = [n for dataset in charts["#dash-sends"]["datasets"] for n in dataset["data"] if n]
    assert len(bars) == 4  # 3 days delivered + today's bounce
    rate, threshold = charts["#dash-hard-bounces"]["datasets"]
    assert threshold["dash"] and set(threshold["data"]) == {5.0}  # the 5 % pause threshold, dashed
    assert rate["data"][-1] == 33.333  # today: 1 hard bounce of the 3 messages handed off
    assert sum(1 for colour in rate["points"] if colour == "#d64545") == 1  # one day above the threshold
    assert "7 messages scheduled" in tab.inner_text("#dash-sends figcaption")
    assert page.console_errors == [] and page.page_errors == [], page.problems()
    assert page.failed_responses == [], page.failed_responses
    assert page.csp_violations() == []


def test_admin_pages_run_under_their_policy_without_a_violation_or_console_error(page, make_user, acme):
    """The dashboard, a mailbox page, a domain page, the bulk-add page and every changelist: each answers with
    the admin's Content-Security-Policy, reports no violation of it, and logs no error."""
    from mailboxes.dns import dkim
    from tests.admin.test_dashboard import message

    message(acme.workspace, "delivered", mailbox=acme.mailbox)
    dkim.generate_key(domain=acme.domain)
    make_user("owen", workspace=acme.workspace, role="owner")
    tab = page.tab
    page.log_in("owen")
    paths = ["/", f"/mailboxes/mailbox/{acme.mailbox.pk}/change/", f"/mailboxes/sendingdomain/{acme.domain.pk}/change/",
             "/mailboxes/mailbox/bulk-add/", f"/workspaces/workspace/{acme.workspace.pk}/onboarding/"]
    paths += [f"/{app}/{model}/" for app, model in [
        ("mailboxes", "mailbox"), ("mailboxes", "sendingdomain"), ("mailboxes", "pool"), ("mailboxes", "warmupprofile"),
        ("providers", "providerconnection"), ("controlplane", "message"), ("controlplane", "event"),
        ("suppression", "suppression"), ("workspaces", "workspace"), ("workspaces", "workspaceapikey"),
        ("audit", "auditevent")]]

    for path in paths:
        response = page.open(path)
        policy = response.header_value("content-security-policy") or ""
        assert "script-src 'self' 'unsafe-eval';" in policy, (path, policy)
        tab.wait_for_load_state("load")
        assert page.csp_violations() == [], (path, page.csp_violations())
        assert tab.evaluate("typeof window.Alpine") == "object", path  # the theme's scripts run

    assert page.console_errors == [] and page.page_errors == [], page.problems()
    assert page.failed_responses == [], page.failed_responses


def test_the_copy_buttons_put_the_dkim_record_on_the_clipboard(page, make_user, acme):
    from mailboxes.dns import dkim

    key = dkim.generate_key(domain=acme.domain)
    make_user("owen", workspace=acme.workspace, role="owner")
    page.tab.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=page.base_url)
    page.log_in("owen")
    page.open(f"/mailboxes/sendingdomain/{acme.domain.pk}/change/")
    name = f"{key.selector}._domainkey.mail.acme.com"

    page.tab.click(f"#records-to-publish button[data-copy='{name}']")
    copied_name = page.tab.evaluate("navigator.clipboard.readText()")
    page.tab.locator("#records-to-publish button[title='Copy the value']").first.click()
    copied_value = page.tab.evaluate("navigator.clipboard.readText()")

    assert copied_name == name
    assert copied_value == key.txt_value()
    assert page.csp_violations() == [] and not page.problems(), page.problems()
