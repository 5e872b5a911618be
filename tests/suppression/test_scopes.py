"""Subdomain patterns, the agency-wide list and why an address is suppressed (the check explains itself)."""

import datetime as dt
import threading
import time

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from audit.models import AuditChain, AuditEvent
from audit.services import verify
from suppression import services
from suppression.models import Suppression
from tests.api.helpers import assert_error

pytestmark = pytest.mark.django_db

ADDRESSES = ["x@acme.com", "x@mail.acme.com", "y@a.b.acme.com", "z@notacme.com", "z@acme.com.evil.io",
             "jane@globex.com", "jane@sub.globex.com", "nobody@initech.com"]


def test_a_subdomain_pattern_covers_every_subdomain_but_not_the_domain_itself(workspace):
    services.suppress(workspace=workspace, value="@*.Acme.com")

    assert services.is_suppressed(workspace, "x@mail.acme.com")
    assert services.is_suppressed(workspace, "x@a.b.acme.com")
    assert not services.is_suppressed(workspace, "x@acme.com")
    assert not services.is_suppressed(workspace, "x@notacme.com")
    assert not services.is_suppressed(workspace, "x@acme.com.evil.io")
    entry = services.find(workspace, "x@a.b.acme.com")
    assert (entry.value, entry.kind) == ("@*.acme.com", "subdomain")


def test_a_domain_entry_covers_exactly_the_domain(workspace):
    services.suppress(workspace=workspace, value="@acme.com")

    assert services.is_suppressed(workspace, "x@acme.com")
    assert not services.is_suppressed(workspace, "x@mail.acme.com")
    assert services.find(workspace, "x@acme.com").kind == "domain"


@pytest.mark.parametrize("pattern", ["@*.com", "@*acme.com", "@*.*.acme.com", "@a.*.acme.com", "*@acme.com",
                                     "@**.acme.com", "@*.", "@*.acme", "@acme.*"])
def test_malformed_patterns_are_refused_in_the_contract_error_shape(api, pattern):
    response = api.post("/api/v1/suppressions", {"value": pattern}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert "@*.acme.com covers every subdomain of acme.com" in error["fields"]["value"][0]
    assert not Suppression.objects.exists()


def test_bulk_lists_malformed_patterns_as_invalid(api):
    result = api.post("/api/v1/suppressions/bulk", {"values": ["@*.acme.com", "@*.com", "jane@acme.com"]},
                      format="json").json()

    assert result == {"created": 2, "existing": 0, "invalid": ["@*.com"]}
    assert Suppression.objects.get(value="@*.acme.com").kind == "subdomain"


def test_an_agency_wide_entry_blocks_every_workspace_and_is_audited_in_the_global_chain(workspace, other_workspace):
    entry, created = services.suppress(workspace=None, value="@competitor.com", reason="dnc", note="agency policy")

    assert created and entry.scope == "global"
    assert services.is_suppressed(workspace, "ceo@competitor.com")
    assert services.is_suppressed(other_workspace, "ceo@competitor.com")
    event = AuditEvent.objects.get(action="suppression.created")
    assert event.workspace_id is None and event.chain == "global"
    assert event.after["scope"] == "global"
    assert verify(chain="global").ok

    services.remove(entry=entry)
    assert not services.is_suppressed(other_workspace, "ceo@competitor.com")
    assert AuditEvent.objects.get(action="suppression.deleted").chain == "global"
    assert AuditChain.objects.get(key="global").last_seq == 2


def test_the_check_reports_the_agency_wide_entry_first_with_why(api, workspace):
    own, _ = services.suppress(workspace=workspace, value="jane@acme.com", reason="unsubscribe", source="api")
    agency, _ = services.suppress(workspace=None, value="@*.acme.com", reason="dnc", source="admin")
    services.suppress(workspace=workspace, value="@mail.acme.com", reason="manual")

    check = api.get("/api/v1/suppressions/check", {"address": "Jane@Mail.Acme.com"}).json()

    assert check["suppressed"] is True
    assert (check["matched"], check["reason"]) == ("@*.acme.com", "dnc")
    assert check["entry"]["id"] == agency.pk
    assert (check["entry"]["scope"], check["entry"]["kind"], check["entry"]["source"]) == ("global", "subdomain",
                                                                                            "admin")
    assert [(m["value"], m["scope"]) for m in check["matches"]] == [("@*.acme.com", "global"),
                                                                    ("@mail.acme.com", "workspace")]
    exact = api.get("/api/v1/suppressions/check", {"address": "jane@acme.com"}).json()
    assert exact["entry"]["id"] == own.pk and exact["entry"]["created_by"] == "tests"
    assert set(exact["entry"]) == {"id", "value", "scope", "kind", "reason", "source", "source_event", "note",
                                   "created_by", "created_at", "evidence"}
    assert api.get("/api/v1/suppressions/check", {"address": "jane@acme.org"}).json() == {"suppressed": False}


def test_a_rejected_send_names_the_agency_wide_list(api, sending_setup):
    services.suppress(workspace=None, value="@competitor.com", reason="dnc")

    response = api.post("/api/v1/messages", {"to": "ceo@competitor.com", "subject": "s", "text": "t"}, format="json")

    error = assert_error(response, 422, "suppressed")
    assert error["scope"] == "global" and error["reason"] == "dnc"
    assert "agency-wide suppression list" in error["message"]


def test_agency_wide_entries_are_not_listed_nor_deletable_through_a_workspace_key(api):
    entry, _ = services.suppress(workspace=None, value="@competitor.com")

    assert api.get("/api/v1/suppressions").json()["results"] == []
    assert_error(api.delete(f"/api/v1/suppressions/{entry.pk}"), 404, "not_found")
    assert Suppression.objects.filter(pk=entry.pk).exists()


def test_suppressed_many_agrees_with_is_suppressed_in_one_statement(workspace, other_workspace):
    services.suppress(workspace=workspace, value="x@acme.com")
    services.suppress(workspace=workspace, value="@*.acme.com")
    services.suppress(workspace=None, value="@globex.com")
    services.suppress(workspace=other_workspace, value="nobody@initech.com")
    batch = ADDRESSES + ["not an address", "X@ACME.COM"]

    with CaptureQueriesContext(connection) as ctx:
        blocked = services.suppressed_many(workspace, batch)

    assert len(ctx.captured_queries) == 1
    assert blocked == {a for a in ADDRESSES if services.is_suppressed(workspace, a)} | {"X@ACME.COM"}
    assert blocked == {"x@acme.com", "x@mail.acme.com", "y@a.b.acme.com", "jane@globex.com", "X@ACME.COM"}
    assert services.suppressed_many(other_workspace, ADDRESSES) == {"jane@globex.com", "nobody@initech.com"}
    assert services.suppressed_many(workspace, []) == set()


def test_is_suppressed_is_one_statement_whatever_the_depth(workspace):
    services.suppress(workspace=None, value="@*.d.example.com")
    with CaptureQueriesContext(connection) as ctx:
        assert services.is_suppressed(workspace, "x@a.b.c.d.example.com")
        assert not services.is_suppressed(workspace, "x@d.example.com")
    assert len(ctx.captured_queries) == 2


def wait_until(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.django_db(transaction=True)
def test_a_global_entry_added_while_sends_are_accepted_blocks_every_later_send_everywhere(
        workspace, other_workspace, sending_setup, smtp_sink, run_workers, make_api):
    from mailboxes.models import Mailbox, Pool, SendingDomain
    from providers.services import create_connection

    domain = SendingDomain.objects.create(workspace=other_workspace, name="mail.globex.com")
    provider = create_connection(workspace=other_workspace, kind="smtp", name="sink",
                                 settings={"host": "127.0.0.1", "port": smtp_sink.port, "security": "none"})
    box = Mailbox.objects.create(workspace=other_workspace, domain=domain, provider=provider, daily_cap=200,
                                 weekly_cap=1000, address="ann@mail.globex.com", min_interval_seconds=0,
                                 send_window_days=[1, 2, 3, 4, 5, 6, 7], send_window_start=dt.time(0, 0),
                                 send_window_end=dt.time.max, send_window_timezone="UTC")
    Pool.objects.create(workspace=other_workspace, name="cold", workloads=["cold"]).mailboxes.add(box)
    Mailbox.objects.filter(workspace=workspace).update(daily_cap=200, weekly_cap=1000)
    clients = [make_api(workspace, "sequencer"), make_api(other_workspace, "sequencer")]
    added = threading.Event()
    stop = threading.Event()
    outcomes = []  # (started after the entry was committed, status code, error code)

    def send(client, n):
        try:
            while not stop.is_set() and n < 400:
                after = added.is_set()
                r = client.post("/api/v1/messages", {"to": f"p{n}@prospect.example", "subject": "s", "text": "t"},
                                format="json")
                outcomes.append((after, r.status_code, r.json().get("error", {}).get("code")))
                n += 2
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(clients[i % 2], i)) for i in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(1 for o in outcomes if o[1] == 202) >= 8)
    services.suppress(workspace=None, value="@prospect.example", reason="dnc")  # committed on return
    added.set()
    wait_until(lambda: sum(1 for o in outcomes if o[0]) >= 8)
    stop.set()
    for t in threads:
        t.join()

    later = [o for o in outcomes if o[0]]
    assert later and all((status, code) == (422, "suppressed") for _, status, code in later), later
    accepted = [o for o in outcomes if o[1] == 202]
    assert accepted
    run_workers()
    assert smtp_sink.messages == []  # those accepted before the entry ended suppressed before hand-off
    from controlplane.models import Message

    assert set(Message.objects.values_list("status", flat=True)) == {"suppressed"}
    assert Message.objects.filter(workspace=other_workspace).exists()


def test_suppressed_many_takes_a_batch_larger_than_a_statement_has_parameters(workspace):
    services.suppress(workspace=workspace, value="@*.acme.com")
    batch = [f"p{n}@eu.acme.com" for n in range(100)] + [f"p{n}@mail.globex.com" for n in range(35000)]

    with CaptureQueriesContext(connection) as ctx:
        blocked = services.suppressed_many(workspace, batch)

    assert len(ctx.captured_queries) == 1
    assert blocked == set(batch[:100])
