"""A real SMTP server (aiosmtpd) on loopback that records what it receives and can be told how to answer."""

import collections
import threading

import logging

from aiosmtpd.controller import Controller

logging.getLogger("mail.log").setLevel(logging.WARNING)

from scripts.servers import free_port


class RecordingHandler:
    def __init__(self):
        self.messages = []
        self.replies = collections.deque()  # scripted DATA replies, e.g. "451 4.3.0 try later"
        self.rcpt_replies = {}  # address -> reply for RCPT
        self.mail_replies = {}  # sender -> reply for MAIL
        self.pipelining = True  # offered, as Postfix, Gmail and Microsoft 365 offer it
        self.data_already_sent = []  # per RCPT: had the client sent DATA before hearing back (pipelining)?
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self.mail_replies.get(address.lower())
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.data_already_sent.append(b"DATA" in bytes(server._reader._buffer))
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.replies:
                reply = self.replies.popleft()
                if not reply.startswith("250"):
                    return reply
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 2.0.0 Ok: queued as TEST"


class SmtpSink:
    def __init__(self):
        self.handler = RecordingHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    @property
    def messages(self):
        return self.handler.messages

    def recipients(self):
        return [rcpt for _, rcpts, _ in self.handler.messages for rcpt in rcpts]
