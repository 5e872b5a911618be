"""The end-to-end benchmark's clients, each run in a process of its own: the sequencer POSTing batches,
and plain smtplib sending the ceiling's messages.

A module of its own (requests and smtplib, no Django) so that client processes start fast, and send from
outside the process that runs the SMTP server (threads there would share its interpreter lock)."""

import os
import smtplib
import time

import requests


def ready(seconds):
    """Holds a pool's process for `seconds` (so that each of a pool's first tasks starts a process of its own,
    before the clock); returns its pid."""
    time.sleep(seconds)
    return os.getpid()


def submit(url, key, start, count):
    """POSTs messages `start` to `start + count` as one batch; returns the errors of those refused."""
    body = {"messages": [{"to": f"lead{n}@example.com", "subject": f"Hello {n}",
                          "text": "Hi there, a short cold email body."} for n in range(start, start + count)]}
    r = requests.post(url, json=body, headers={"Authorization": f"Api-Key {key}"}, timeout=600)
    r.raise_for_status()
    return [item["error"] for item in r.json()["results"] if "id" not in item]


def send_all(port, messages):
    """Sends (mail from, recipients, bytes) over one SMTP connection to 127.0.0.1:`port`."""
    with smtplib.SMTP("127.0.0.1", port) as client:
        for mail_from, rcpt_to, data in messages:
            client.sendmail(mail_from, rcpt_to, data)
    return len(messages)
