"""The fast paths of the MIME builder write exactly the bytes the email package writes."""

import datetime as dt
import email
from email import policy as email_policy
from types import SimpleNamespace

import pytest

from controlplane import mime

NOW = dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.timezone.utc)


def _message(text, *, html="", subject="Hello", display_name="Ann Rep", headers=None, workload="cold"):
    domain = SimpleNamespace(name="acme.example")
    return SimpleNamespace(
        id="msg_01test", to_address="lead@prospect.example", subject=subject, text=text, html=html,
        headers=headers or {}, workload=workload, message_id_header="",
        mailbox=SimpleNamespace(display_name=display_name, address="ann@acme.example", domain=domain,
                                domain_id="dom_1"),
        workspace=SimpleNamespace(sender_identification="Acme Ltd", postal_address="1 Rue de la Paix\nParis"))


def _by_email_package(monkeypatch, message):
    with monkeypatch.context() as patched:
        patched.setattr(mime, "_plain_text_body", lambda text: None)
        patched.setattr(mime, "_plain_header_block", lambda headers: None)
        return mime.build(message, now=NOW, dkim_key=None)


BODIES = [
    "Hi there, a short cold email body.",
    "line one\nline two\n",
    "windows\r\nline ends\r\n\r\n",
    "old mac\rline ends",
    "",
    "\n\n\n",
    ". a leading dot\nFrom the start of a line\n",
    "tabs\tand\x0cform feeds  \n  and trailing spaces   ",
    "x" * 998,
    ("y" * 997 + "\n") * 3,
]


@pytest.mark.parametrize("text", BODIES)
@pytest.mark.parametrize("workload", ["cold", "transactional"])
def test_plain_text_fast_path_matches_the_email_package(monkeypatch, text, workload):
    message = _message(text, workload=workload, headers={"X-Campaign": "spring-42"})
    fast = mime.build(message, now=NOW, dkim_key=None)
    assert fast == _by_email_package(monkeypatch, message)
    parsed = email.message_from_bytes(fast, policy=email_policy.default)
    assert parsed.get_content_type() == "text/plain"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed.get_content().replace("\r\n", "\n").startswith(text.replace("\r\n", "\n").replace("\r", "\n")
                                                                 .rstrip("\n")[:50])


def _unbounded(data):
    """The bytes with a multipart boundary (random per message) replaced by a fixed one."""
    boundary = email.message_from_bytes(data).get_boundary()
    return data.replace(boundary.encode(), b"BOUNDARY") if boundary else data


@pytest.mark.parametrize("message", [
    _message("Grüße aus Paris"),  # not ASCII: the email package picks the encoding
    _message("z" * 999),  # longer than a line may be
    _message("Hi", html="<p>Hi</p>"),  # multipart/alternative
    _message("Hi", subject="Café au lait"),  # an encoded header
    _message("Hi", display_name="Zoë Rep"),
], ids=["utf8-body", "long-line", "html", "utf8-subject", "utf8-name"])
def test_what_the_fast_paths_cannot_write_goes_through_the_email_package(monkeypatch, message):
    data = mime.build(message, now=NOW, dkim_key=None)
    assert _unbounded(data) == _unbounded(_by_email_package(monkeypatch, message))
    parsed = email.message_from_bytes(data, policy=email_policy.default)
    assert parsed["Subject"] == message.subject
    body = parsed.get_body(("plain",)).get_content()
    assert body.startswith(message.text)


def test_unsubscribe_tokens_are_django_signer_tokens_across_key_rotation(settings):
    """The unsubscribe signer sets up its HMAC once, yet its tokens are exactly Django's Signer's, a
    token signed before a SECRET_KEY rotation still opens (the old key in SECRET_KEY_FALLBACKS), and
    an altered one does not."""
    from django.core import signing

    django_signer = signing.Signer(key=settings.SECRET_KEY, salt=mime.UNSUBSCRIBE_SALT)
    assert mime.unsubscribe_token("msg_one") == django_signer.sign("msg_one")
    assert mime.unsubscribe_token("msg_two") == django_signer.sign("msg_two")
    assert mime.message_id_from_token(django_signer.sign("msg_one")) == "msg_one"

    old_key = settings.SECRET_KEY
    before_rotation = mime.unsubscribe_token("msg_three")
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-secret-key-" + "x" * 40, [old_key]
    assert mime.unsubscribe_token("msg_three") != before_rotation
    assert mime.message_id_from_token(before_rotation) == "msg_three"
    assert mime.message_id_from_token(mime.unsubscribe_token("msg_three")) == "msg_three"
    with pytest.raises(signing.BadSignature):
        mime.message_id_from_token(before_rotation[:-2] + ("AA" if not before_rotation.endswith("AA") else "BB"))
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(signing.BadSignature):
        mime.message_id_from_token(before_rotation)


def test_the_date_header_is_the_email_package_s_for_its_second_and_offset():
    from email.utils import format_datetime

    paris = dt.timezone(dt.timedelta(hours=2))
    for at in [NOW, NOW.replace(microsecond=999_999), NOW + dt.timedelta(seconds=1), NOW.astimezone(paris),
               (NOW + dt.timedelta(seconds=1)).astimezone(paris)]:
        assert mime.date_header(at) == format_datetime(at.replace(microsecond=0))
    assert mime.date_header(NOW.astimezone(paris)).endswith("+0200")  # the same instant, not the UTC header
    parsed = email.message_from_bytes(mime.build(_message("Hi"), now=NOW, dkim_key=None))
    assert parsed["Date"] == "Sun, 29 Mar 2026 01:30:00 +0000"
