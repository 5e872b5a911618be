"""A real SMTP server (aiosmtpd) on loopback that records what it receives and can be told how to answer."""

import asyncio
import collections
import threading
import time

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
        self.next_already_sent = []  # per message received: had the client sent the next MAIL with its end?
        self.hang_up_after = None  # 421 and close at the next MAIL after this many messages on a connection
        self.connections = 0
        self.servers = []  # the server side of each connection
        self.vanish_after_data = 0  # this many times: take a message, then drop the connection before answering
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if session.host_name is None:
            self.connections += 1
            self.servers.append(server)
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.hang_up_after is not None and getattr(session, "received", 0) >= self.hang_up_after:
            asyncio.get_running_loop().call_soon(server.transport.close)  # once this reply is written
            return "421 4.7.0 Too many messages on this connection, closing"
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
            self.next_already_sent.append(b"MAIL FROM" in bytes(server._reader._buffer))
        session.received = getattr(session, "received", 0) + 1
        if self.vanish_after_data:
            self.vanish_after_data -= 1
            server.transport.abort()  # the reply below is never written
        return "250 2.0.0 Ok: queued as TEST"


class SmtpSink:
    def __init__(self, *, smtputf8=False):
        self.handler = RecordingHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=smtputf8)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    def hang_up_all(self):
        """Closes every open connection without a word, as a server does with idle ones."""
        for server in self.handler.servers:
            self.controller.loop.call_soon_threadsafe(server.transport.close)
        time.sleep(0.1)

    @property
    def messages(self):
        return self.handler.messages

    def recipients(self):
        return [rcpt for _, rcpts, _ in self.handler.messages for rcpt in rcpts]
