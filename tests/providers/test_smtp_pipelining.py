"""SMTP hand-off with and without PIPELINING (RFC 2920) against a real aiosmtpd server, one message or a
burst of them over a connection: the same replies reach the same outcomes, a refused step is the one
reported, the connection stays usable, and a connection lost mid-burst loses nothing and sends nothing twice."""

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


def _burst(transport, recipients):
    """send_many over these recipients: [(recipient, SendResult or TransportError)] in order."""
    return list(transport.send_many((rcpt, _message(rcpt=rcpt)) for rcpt in recipients))


def test_a_burst_ends_each_message_together_with_the_next_ones_envelope(transport, smtp_sink, pipelining):
    recipients = [f"lead{n}@example.com" for n in range(4)]
    results = _burst(transport, recipients)
    assert [rcpt for rcpt, _ in results] == recipients
    assert all(result.response.startswith("250 2.0.0 Ok") for _, result in results)
    assert [rcpts for _, rcpts, _ in smtp_sink.messages] == [[rcpt] for rcpt in recipients]
    # one round trip per message: the end of one message and the next MAIL, RCPT, DATA arrive together
    assert smtp_sink.handler.next_already_sent == [pipelining] * 3 + [False]
    assert smtp_sink.handler.connections == 1
    for _, _, content in smtp_sink.messages:
        assert content.replace(b"\r\n", b"\n").endswith(b"first line\n.hidden starts with a dot\n.\nlast\n")


def test_a_refusal_in_a_burst_is_that_messages_alone(transport, smtp_sink):
    smtp_sink.handler.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    smtp_sink.handler.replies.extend(["250 ok", "451 4.3.0 Try again later"])  # the first and second DATA
    results = dict(_burst(transport, ["a@example.com", "nobody@example.com", "c@example.com", "d@example.com"]))
    assert results["a@example.com"].response.startswith("250")
    assert isinstance(results["nobody@example.com"], PermanentError)
    assert results["nobody@example.com"].reply == "550 5.1.1 No such user"
    assert isinstance(results["c@example.com"], TransientError)
    assert results["c@example.com"].reply == "451 4.3.0 Try again later"
    assert results["d@example.com"].response.startswith("250")
    assert smtp_sink.recipients() == ["a@example.com", "d@example.com"]
    assert smtp_sink.handler.connections == 1


def test_a_server_that_hangs_up_mid_burst_loses_and_repeats_nothing(transport, smtp_sink):
    """Servers cap messages per connection: an envelope written before the server hung up goes again
    over a new connection, and no message is sent twice."""
    smtp_sink.handler.hang_up_after = 2
    recipients = [f"lead{n}@example.com" for n in range(5)]
    results = _burst(transport, recipients)
    assert all(getattr(result, "response", "").startswith("250") for _, result in results), results
    assert smtp_sink.recipients() == recipients
    assert smtp_sink.handler.connections == 3


def test_a_burst_stopped_early_sends_no_half_message(transport, smtp_sink):
    results = transport.send_many((rcpt, _message(rcpt=rcpt)) for rcpt in ["a@example.com", "b@example.com"])
    rcpt, first = next(results)
    assert (rcpt, first.response[:3]) == ("a@example.com", "250")
    results.close()  # e.g. the worker stops here: b's envelope may be out, its content never is
    assert transport.send(_message(rcpt="c@example.com")).response.startswith("250")
    assert smtp_sink.recipients() == ["a@example.com", "c@example.com"]


def test_a_pooled_connection_the_server_closed_is_replaced_without_losing_the_message(transport, smtp_sink):
    transport.send(_message(rcpt="first@example.com"))
    smtp_sink.hang_up_all()  # the server drops the idle connection the worker keeps
    assert transport.send(_message(rcpt="second@example.com")).response.startswith("250")
    assert smtp_sink.recipients() == ["first@example.com", "second@example.com"]
    assert smtp_sink.handler.connections == 2


def test_a_connection_lost_after_the_content_is_not_sent_again_by_the_transport(transport, smtp_sink):
    """Whether the server kept a message whose answer never came is unknown: that message is a transient
    failure (retried later, by the schedule), the next ones go on over a new connection."""
    smtp_sink.handler.vanish_after_data = 1
    results = dict(_burst(transport, ["a@example.com", "b@example.com", "c@example.com"]))
    assert isinstance(results["a@example.com"], TransientError)
    assert results["b@example.com"].response.startswith("250")
    assert results["c@example.com"].response.startswith("250")
    assert smtp_sink.recipients() == ["a@example.com", "b@example.com", "c@example.com"]
    assert smtp_sink.handler.connections == 2


def test_internationalised_addresses_go_as_the_server_allows(transport, smtp_sink):
    """An IDN domain travels as its ASCII form; a non-ASCII local part needs SMTPUTF8, which this server
    does not offer: that message alone fails for good, nothing of it written, the burst goes on."""
    results = dict(_burst(transport, ["lead@bücher.example", "jörg@example.com", "after@example.com"]))
    assert results["lead@bücher.example"].response.startswith("250")
    assert isinstance(results["jörg@example.com"], PermanentError)
    assert "SMTPUTF8" in str(results["jörg@example.com"])
    assert results["after@example.com"].response.startswith("250")
    assert smtp_sink.recipients() == ["lead@xn--bcher-kva.example", "after@example.com"]


def test_a_non_ascii_local_part_goes_to_a_server_offering_smtputf8(workspace, pipelining):
    from tests.smtpserver import SmtpSink

    sink = SmtpSink(smtputf8=True).start()
    try:
        sink.handler.pipelining = pipelining
        provider = create_connection(workspace=workspace, kind="smtp", name="utf8",
                                     settings={"host": "127.0.0.1", "port": sink.port, "security": "none"})
        [(_, result)] = list(transport_for(provider).send_many([("x", _message(rcpt="jörg@example.com"))]))
        assert result.response.startswith("250")
        [(_, rcpts, _)] = sink.messages
        assert rcpts == ["jörg@example.com"]
    finally:
        sink.stop()
