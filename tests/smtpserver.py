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
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
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
