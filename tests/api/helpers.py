SMTP = {"kind": "smtp", "name": "relay", "settings": {"host": "127.0.0.1", "port": 2525, "security": "none"},
        "credentials": {"username": "relay-user", "password": "hunter2-very-secret"}}


def assert_error(response, status, code):
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def create_identities(api, *, domain="mail.acme.com", local="jane", provider_name="relay"):
    """A domain, an SMTP provider, a warm-up profile, a mailbox and a pool through the API; returns their ids."""
    d = api.post("/api/v1/domains", {"name": domain}, format="json")
    assert d.status_code == 201, d.json()
    p = api.post("/api/v1/providers", {**SMTP, "name": provider_name}, format="json")
    assert p.status_code == 201, p.json()
    w = api.post("/api/v1/warmup-profiles", {"name": f"ramp-{domain}", "start": 5, "step": 5, "max": 40}, format="json")
    assert w.status_code == 201, w.json()
    m = api.post("/api/v1/mailboxes", {"address": f"{local}@{domain}", "provider": p.json()["id"],
                                       "daily_cap": 30, "weekly_cap": 120}, format="json")
    assert m.status_code == 201, m.json()
    # Open all day, every day, so that tests which send through it do not depend on the hour they run at.
    import datetime as dt

    from mailboxes.models import Mailbox

    Mailbox.objects.filter(pk=m.json()["id"]).update(send_window_days=[1, 2, 3, 4, 5, 6, 7],
                                                      send_window_start=dt.time(0, 0), send_window_end=dt.time.max)
    pool = api.post("/api/v1/pools", {"name": f"cold-{domain}", "strategy": "round_robin", "workloads": ["cold"],
                                      "mailboxes": [m.json()["id"]]}, format="json")
    assert pool.status_code == 201, pool.json()
    s = api.post("/api/v1/suppressions", {"value": f"nope@{domain}", "reason": "manual"}, format="json")
    assert s.status_code == 201, s.json()
    return {"domain": d.json()["id"], "provider": p.json()["id"], "warmup": w.json()["id"],
            "mailbox": m.json()["id"], "pool": pool.json()["id"], "suppression": s.json()["id"]}


def midday_zone(now=None):
    """A fixed-offset time zone (Etc/GMT±N) in which it is now between 12:00 and 13:00, so that a test
    about today's send window runs whatever the hour it runs at (none of it near midnight)."""
    import datetime as dt

    hours = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).hour - 12  # local = UTC - hours
    return "Etc/GMT" if hours == 0 else f"Etc/GMT{'+' if hours > 0 else '-'}{abs(hours)}"
