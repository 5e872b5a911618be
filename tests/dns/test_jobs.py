"""Checks on demand, on create and every day, run by RQ workers on the `dns` queue."""

import datetime as dt

import django_rq
import pytest
from rq import SimpleWorker
from rq.cron import CronScheduler

from audit.models import AuditEvent
from mailboxes import jobs
from mailboxes.models import DomainCheckRun, SendingDomain
from tests.api.helpers import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def run_dns_worker(redis_conn):
    def run():
        SimpleWorker([django_rq.get_queue("dns")], connection=redis_conn).work(burst=True)

    return run


def test_check_without_wait_is_queued_and_a_worker_runs_it(api, zone, run_dns_worker,
                                                           django_capture_on_commit_callbacks):
    domain = zone.domain("queued.test")

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/domains/{domain.pk}/check")

    assert response.status_code == 202
    assert response.json()["status"] == "unchecked"
    assert django_rq.get_queue("dns").count == 1
    run_dns_worker()
    body = api.get(f"/api/v1/domains/{domain.pk}").json()
    assert body["status"] == "pass"
    assert DomainCheckRun.objects.get(domain=domain).trigger == "manual"


def test_a_domain_created_through_the_api_is_checked_by_the_worker(api, dns_server, run_dns_worker,
                                                                   django_capture_on_commit_callbacks):
    dns_server.add("fresh.test", "TXT", "v=spf1 -all")

    with django_capture_on_commit_callbacks(execute=True):
        created = api.post("/api/v1/domains", {"name": "fresh.test"}, format="json").json()
    run_dns_worker()

    body = api.get(f"/api/v1/domains/{created['id']}").json()
    assert body["checked_at"] is not None
    assert body["checks"]["spf"]["status"] == "pass"
    assert body["checks"]["dkim"]["status"] == "fail"  # the new key is not published yet
    assert DomainCheckRun.objects.get(domain_id=created["id"]).trigger == "created"
    paused = AuditEvent.objects.get(action="domain.paused", object_id=created["id"])
    assert paused.actor_label == "domain checks"


def test_checking_needs_an_admin_key_and_sees_only_its_workspace(make_api, workspace, other_api, zone):
    domain = zone.domain("mine.test")

    assert_error(make_api(workspace, "sequencer").post(f"/api/v1/domains/{domain.pk}/check?wait=true"), 403,
                 "permission_denied")
    assert_error(other_api.post(f"/api/v1/domains/{domain.pk}/check?wait=true"), 404, "not_found")
    assert SendingDomain.objects.get(pk=domain.pk).status == "unchecked"


def test_the_daily_job_checks_every_workspace(zone, other_workspace, google, run_dns_worker,
                                              django_capture_on_commit_callbacks):
    zone.domain("one.test")
    zone.domain("two.test", dmarc=None)
    zone.workspace = other_workspace
    zone.domain("three.test", provider=None, mailbox=False)

    with django_capture_on_commit_callbacks(execute=True):
        django_rq.get_queue("dns").enqueue(jobs.check_all_domains)
    run_dns_worker()

    statuses = dict(SendingDomain.objects.values_list("name", "status"))
    assert statuses == {"one.test": "pass", "two.test": "fail", "three.test": "pass"}
    assert set(DomainCheckRun.objects.values_list("trigger", flat=True)) == {"schedule"}


def test_the_daily_run_happens_once_a_day_however_many_schedulers_enqueue_it(zone, run_dns_worker,
                                                                          django_capture_on_commit_callbacks):
    zone.domain("daily.test")

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):  # three worker processes, three cron schedulers
            django_rq.get_queue("dns").enqueue(jobs.daily_domain_checks)
    run_dns_worker()

    assert DomainCheckRun.objects.filter(domain__name="daily.test", trigger="schedule").count() == 1
    assert SendingDomain.objects.get(name="daily.test").status == "pass"


def test_the_daily_run_is_registered_for_six_in_the_morning(redis_conn):
    scheduler = CronScheduler(connection=redis_conn)
    scheduler.load_config_from_file("mailboxes.dns.cron")

    [cron_job] = scheduler.get_jobs()
    assert cron_job.name == "daily-domain-checks"
    assert cron_job.queue_name == "dns"
    assert cron_job.func_name == "mailboxes.jobs.daily_domain_checks"
    next_run = cron_job.next_enqueue_time.astimezone()
    assert (next_run.hour, next_run.minute) == (6, 0)
    assert next_run - dt.datetime.now().astimezone() <= dt.timedelta(days=1)


def test_the_daily_time_is_a_setting(redis_conn, settings):
    settings.DNS_CHECK_CRON = "30 2 * * *"
    scheduler = CronScheduler(connection=redis_conn)

    cron_job = jobs.register_cron_jobs(scheduler.register)

    next_run = cron_job.next_enqueue_time.astimezone()
    assert (next_run.hour, next_run.minute) == (2, 30)
