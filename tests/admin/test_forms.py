"""Admin forms explain what is wrong, in the form, and never show a stored secret."""

import pytest

from audit.models import AuditEvent
from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile
from providers.models import ProviderConnection
from tests.admin.conftest import SECRET, add_url, change_url, form_errors

pytestmark = pytest.mark.django_db


def mailbox_data(acme, **overrides):
    data = {
        "workspace": acme.workspace.pk, "address": "jane@mail.acme.com", "display_name": "Jane",
        "provider": acme.provider.pk, "daily_cap": 30, "weekly_cap": 150, "min_interval_seconds": 60,
        "jitter_seconds": 0, "send_window_days": [1, 2, 3, 4, 5], "send_window_start": "08:00",
        "send_window_end": "18:00", "send_window_timezone": "Europe/Paris", "priority": 0, "weight": 1,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def provider_data(acme, **overrides):
    data = {"workspace": acme.workspace.pk, "kind": "smtp", "name": "backup relay",
            "settings": '{"host": "smtp.acme.com", "port": 587, "security": "starttls"}',
            "credentials_input": '{"username": "u", "password": "typed-secret"}'}
    data.update(overrides)
    return data


class TestMailboxForm:
    def test_a_new_mailbox_takes_its_domain_from_the_address(self, login, acme):
        response = login("operator").post(add_url(Mailbox), mailbox_data(acme, address="Jane@Mail.Acme.com",
                                                                         pools=[acme.pool.pk]))

        assert response.status_code == 302
        mailbox = Mailbox.objects.get(address="jane@mail.acme.com")
        assert mailbox.domain == acme.domain
        assert list(mailbox.pools.all()) == [acme.pool]

    def test_weekly_cap_below_daily_cap_is_refused(self, login, acme):
        response = login("operator").post(add_url(Mailbox), mailbox_data(acme, daily_cap=50, weekly_cap=40))

        assert response.status_code == 200
        assert form_errors(response)["weekly_cap"] == ["Must be at least the daily cap (50)."]
        assert not Mailbox.objects.filter(address="jane@mail.acme.com").exists()

    def test_an_address_on_another_workspaces_domain_is_refused(self, login, acme, globex):
        response = login("operator").post(add_url(Mailbox), mailbox_data(acme, address="jane@mail.globex.com"))

        assert form_errors(response)["address"] == [
            "mail.globex.com is not a sending domain of Acme; add the domain first."]
        assert not Mailbox.objects.filter(address="jane@mail.globex.com").exists()

    def test_an_address_already_in_use_is_refused(self, login, acme):
        response = login("operator").post(add_url(Mailbox), mailbox_data(acme, address=acme.mailbox.address))

        assert "Acme already has a mailbox with this address." in form_errors(response)["address"]

    def test_a_window_that_ends_before_it_starts_is_refused(self, login, acme):
        response = login("operator").post(add_url(Mailbox), mailbox_data(acme, send_window_start="18:00",
                                                                         send_window_end="08:00"))

        assert "Must be after the start" in form_errors(response)["send_window_end"][0]

    def test_a_warmup_profile_starts_today_when_no_date_is_given(self, login, acme):
        login("operator").post(add_url(Mailbox), mailbox_data(acme, warmup_profile=acme.warmup.pk))

        mailbox = Mailbox.objects.get(address="jane@mail.acme.com")
        assert mailbox.warmup_started_on is not None

    def test_changing_caps_keeps_the_domain_and_shows_the_new_caps(self, login, acme):
        client = login("operator")
        data = mailbox_data(acme, address=acme.mailbox.address, daily_cap=5, weekly_cap=25, pools=[acme.pool.pk])
        data.pop("workspace")

        response = client.post(change_url(acme.mailbox), data)

        assert response.status_code == 302
        acme.mailbox.refresh_from_db()
        assert (acme.mailbox.daily_cap, acme.mailbox.weekly_cap, acme.mailbox.domain) == (5, 25, acme.domain)


class TestOtherForms:
    def test_a_domain_name_is_normalised_and_checked(self, login, acme):
        client = login("operator")
        client.post(add_url(SendingDomain), {"workspace": acme.workspace.pk, "name": "News.Acme.COM."})
        bad = client.post(add_url(SendingDomain), {"workspace": acme.workspace.pk, "name": "not a domain"})
        twice = client.post(add_url(SendingDomain), {"workspace": acme.workspace.pk, "name": "mail.acme.com"})

        assert SendingDomain.objects.filter(name="news.acme.com").exists()
        assert form_errors(bad)["name"] == ["“not a domain” is not a domain name (e.g. mail.acme.com)."]
        assert form_errors(twice)["name"] == ["Acme already has a sending domain with this name."]

    def test_a_warmup_profile_needs_a_ramp(self, login, acme):
        response = login("operator").post(add_url(WarmupProfile), {"workspace": acme.workspace.pk, "name": "slow"})

        assert form_errors(response)["start"] == ["Give start (and step, max) or a schedule."]

    def test_a_pool_takes_workloads_as_a_list(self, login, acme):
        login("operator").post(add_url(Pool), {"workspace": acme.workspace.pk, "name": "mixed", "strategy": "weighted",
                                               "workloads": "warm, cold, cold", "mailboxes": [acme.mailbox.pk]})

        pool = Pool.objects.get(name="mixed")
        assert pool.workloads == ["cold", "warm"]
        assert list(pool.mailboxes.all()) == [acme.mailbox]

    def test_pausing_a_workspace_in_its_form_needs_a_reason(self, login, acme):
        ws = acme.workspace
        response = login("admin").post(change_url(ws), {
            "name": ws.name, "timezone": ws.timezone, "sender_identification": ws.sender_identification,
            "postal_address": ws.postal_address, "paused": "on", "paused_reason": "",
            "hard_bounce_threshold": "0.05", "complaint_threshold": "0.003", "health_min_sends": 20,
        })

        assert "Give a reason for pausing" in form_errors(response)["paused_reason"][0]
        ws.refresh_from_db()
        assert not ws.paused


class TestProviderForm:
    def test_unknown_credentials_are_refused(self, login, acme):
        response = login("operator").post(add_url(ProviderConnection), provider_data(
            acme, credentials_input='{"username": "u", "password": "p", "token": "t"}'))

        assert form_errors(response)["credentials_input"] == ["Unknown credential(s) for smtp: token."]
        assert not ProviderConnection.objects.filter(name="backup relay").exists()

    def test_missing_credentials_are_refused(self, login, acme):
        response = login("operator").post(add_url(ProviderConnection), provider_data(
            acme, kind="sendgrid", settings="{}", credentials_input=""))

        assert form_errors(response)["credentials_input"] == [
            "sendgrid needs {api_key, webhook_verification_key} or {api_key}."]

    def test_credentials_that_are_not_json_are_refused(self, login, acme):
        response = login("operator").post(add_url(ProviderConnection), provider_data(
            acme, credentials_input="username=u password=p"))

        assert "Not valid JSON" in form_errors(response)["credentials_input"][0]

    def test_missing_settings_are_named(self, login, acme):
        response = login("operator").post(add_url(ProviderConnection), provider_data(
            acme, settings='{"port": 587, "security": "starttls"}'))

        assert form_errors(response)["settings"] == ["host: This setting is required."]

    def test_a_refused_form_does_not_echo_the_typed_secret(self, login, acme):
        response = login("operator").post(add_url(ProviderConnection), provider_data(acme, settings="{}"))

        assert response.status_code == 200
        assert "typed-secret" not in response.content.decode()

    def test_a_valid_form_stores_the_credentials_encrypted(self, login, acme):
        response = login("operator").post(add_url(ProviderConnection), provider_data(acme))

        assert response.status_code == 302
        provider = ProviderConnection.objects.get(name="backup relay")
        assert provider.credentials == {"username": "u", "password": "typed-secret"}
        event = AuditEvent.objects.get(action="provider.created", object_id=provider.pk)
        assert event.after["credentials"] == "[set]"
        assert "typed-secret" not in str(event.after)

    def test_the_change_form_never_renders_the_stored_secret(self, login, acme):
        client = login("admin")
        page = client.get(change_url(acme.provider)).content.decode()

        assert SECRET not in page
        assert '"relay"' not in page
        assert "stored" in page

    def test_an_empty_credentials_field_keeps_the_stored_credentials(self, login, acme):
        response = login("operator").post(change_url(acme.provider), {
            "name": "renamed relay", "settings": '{"host": "127.0.0.1", "port": 2525, "security": "none"}',
            "credentials_input": ""})

        assert response.status_code == 302
        acme.provider.refresh_from_db()
        assert acme.provider.name == "renamed relay"
        assert acme.provider.credentials == {"username": "relay", "password": SECRET}
        event = AuditEvent.objects.filter(action="provider.updated", object_id=acme.provider.pk).get()
        assert event.before == {"name": "acme-relay"} and event.after == {"name": "renamed relay"}

    def test_new_credentials_replace_the_stored_ones_and_the_log_says_only_changed(self, login, acme):
        login("operator").post(change_url(acme.provider), {
            "name": acme.provider.name, "settings": '{"host": "127.0.0.1", "port": 2525, "security": "none"}',
            "credentials_input": '{"username": "relay", "password": "rotated-password"}'})

        acme.provider.refresh_from_db()
        assert acme.provider.credentials["password"] == "rotated-password"
        event = AuditEvent.objects.filter(action="provider.updated", object_id=acme.provider.pk).get()
        assert event.after == {"credentials": "[changed]"}
        assert "rotated-password" not in str(event.before) + str(event.after)

    def test_a_viewer_sees_the_connection_without_a_credentials_field(self, login, acme):
        page = login("viewer").get(change_url(acme.provider)).content.decode()

        assert acme.provider.name in page
        assert SECRET not in page
        assert "credentials_input" not in page
