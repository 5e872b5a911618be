"""The ceiling of the end-to-end benchmark: plain smtplib sending given messages over one connection.

A module of its own (smtplib only) so that client processes can start without Django."""

import smtplib


def send_all(port, messages):
    """Sends (mail from, recipients, bytes) over one SMTP connection to 127.0.0.1:`port`."""
    if not messages:
        return 0
    with smtplib.SMTP("127.0.0.1", port) as client:
        for mail_from, rcpt_to, data in messages:
            client.sendmail(mail_from, rcpt_to, data)
    return len(messages)
