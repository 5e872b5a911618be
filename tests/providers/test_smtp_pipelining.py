"""SMTP hand-off with and without PIPELINING (RFC 2920) against a real aiosmtpd server: the same
replies reach the same outcomes, a refused step is the one reported, and the connection stays usable."""

import smtplib

import pytest

from providers.base import OutgoingMessage, PermanentError, TransientError, transport_for
from providers.services import create_connection
from providers.smtp import quoteaddr

pytestmark = pytest.mark.django_db

BODY = b"From: ann@mail.acme.com\r\nTo: lead@example.com\r\nSubject: s\r\n\r\nfirst line\r\n.hidden starts with a dot\r\n.\r\nlast"


@pytest.fixture(params=[True, False], ids=["pipelined", "plain"])
def pipelining(request):
    return request.param


@pytest.fixture
def transport(workspace, smtp_sink, pipelining):
    smtp_sink.handler.pipelining = pipelining
    provider = create_connection(workspace=workspace, kind="smtp", name="sink",
                                 settings={"host": "127.0.0.1", "port": smtp_sink.port, "security": "none"})
    return transport_for(provider)


def _message(rcpt="lead@example.com", sender="ann@mail.acme.com"):
    return OutgoingMessage(mail_from=sender, rcpt_to=rcpt, data=BODY, message_id="<m@mail.acme.com>", mailbox_id="mbx_1")


def test_the_message_arrives_whole_in_the_expected_number_of_round_trips(transport, smtp_sink, pipelining):
    result = transport.send(_message())
    assert result.response.startswith("250 2.0.0 Ok")
    [(sender, rcpts, content)] = smtp_sink.messages
    assert (sender, rcpts) == ("ann@mail.acme.com", ["lead@example.com"])
    # dot-stuffing undone by the server: lines starting with a dot, and a lone dot, arrive as written
    assert content.replace(b"\r\n", b"\n").endswith(b"first line\n.hidden starts with a dot\n.\nlast\n")
    assert smtp_sink.handler.data_already_sent == [pipelining]


def test_a_refused_recipient_is_reported_and_the_connection_serves_the_next(transport, smtp_sink):
    smtp_sink.handler.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    with pytest.raises(PermanentError) as refused:
        transport.send(_message(rcpt="nobody@example.com"))
    assert refused.value.reply == "550 5.1.1 No such user"
    assert smtp_sink.messages == []
    transport.send(_message())
    assert [rcpts for _, rcpts, _ in smtp_sink.messages] == [["lead@example.com"]]


def test_a_deferred_sender_is_transient_with_the_server_reply(transport, smtp_sink):
    smtp_sink.handler.mail_replies["ann@mail.acme.com"] = "451 4.7.1 Slow down"
    with pytest.raises(TransientError) as deferred:
        transport.send(_message())
    assert deferred.value.reply == "451 4.7.1 Slow down"
    assert smtp_sink.messages == []
    del smtp_sink.handler.mail_replies["ann@mail.acme.com"]
    transport.send(_message())
    assert len(smtp_sink.messages) == 1


def test_a_deferral_after_the_data_is_transient(transport, smtp_sink):
    smtp_sink.handler.replies.append("452 4.3.1 Insufficient system storage")
    with pytest.raises(TransientError) as deferred:
        transport.send(_message())
    assert deferred.value.reply == "452 4.3.1 Insufficient system storage"
    transport.send(_message())
    assert len(smtp_sink.messages) == 1


@pytest.mark.parametrize("address", ["ann@mail.acme.com", "first.last+tag@sub.example.co", "o'neil@example.com",
                                     "Ann <ann@mail.acme.com>", "\"quoted local\"@example.com", "<>", "user@[127.0.0.1]"])
def test_addresses_are_quoted_as_smtplib_quotes_them(address):
    assert quoteaddr(address) == smtplib.quoteaddr(address)
