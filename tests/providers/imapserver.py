"""A small real IMAP4rev1 server on loopback: one INBOX, LOGIN and XOAUTH2, EXAMINE/SELECT, UID SEARCH/FETCH.

Enough of RFC 3501 for a read-only client; it records every command so tests can check that the
client never changes the mailbox (no STORE, EXPUNGE, COPY, MOVE, no SELECT in read-write mode).
"""

import base64
import email
import re
import socketserver
import threading
from email import policy as email_policy


class ImapServer:
    def __init__(self, *, username="ann@mail.acme.com", password="imap-secret", token=None, uidvalidity=42):
        self.username, self.password, self.token, self.uidvalidity = username, password, token, uidvalidity
        self.messages = {}  # uid -> bytes
        self.next_uid = 1
        self.commands = []
        self.lock = threading.Lock()
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                server._session(self.rfile, self.wfile)

        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.tcp.daemon_threads = True
        self.port = self.tcp.server_address[1]
        self.thread = threading.Thread(target=self.tcp.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.tcp.shutdown()
        self.tcp.server_close()

    def append(self, raw: bytes) -> int:
        with self.lock:
            uid = self.next_uid
            self.messages[uid] = raw
            self.next_uid += 1
        return uid

    # --- protocol -------------------------------------------------------------------------------

    def _session(self, rfile, wfile):
        def send(line):
            wfile.write(line if isinstance(line, bytes) else line.encode())
            wfile.flush()

        send("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 AUTH=PLAIN] test IMAP ready\r\n")
        authenticated = False
        while True:
            line = rfile.readline()
            if not line:
                return
            text = line.decode(errors="replace").rstrip("\r\n")
            tag, _, rest = text.partition(" ")
            command, _, args = rest.partition(" ")
            command = command.upper()
            with self.lock:
                self.commands.append(rest)
            if command == "CAPABILITY":
                send("* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 AUTH=PLAIN\r\n" + f"{tag} OK CAPABILITY completed\r\n")
            elif command == "NOOP":
                send(f"{tag} OK NOOP completed\r\n")
            elif command == "LOGOUT":
                send(f"* BYE logging out\r\n{tag} OK LOGOUT completed\r\n")
                return
            elif command == "LOGIN":
                user, password = [a.strip('"') for a in args.split(" ", 1)]
                authenticated = user == self.username and password == self.password
                send(f"{tag} OK LOGIN completed\r\n" if authenticated else f"{tag} NO [AUTHENTICATIONFAILED] bad\r\n")
            elif command == "AUTHENTICATE" and args.upper().startswith("XOAUTH2"):
                send("+ \r\n")
                response = base64.b64decode(rfile.readline().strip() or b"").decode(errors="replace")
                expected = f"user={self.username}\x01auth=Bearer {self.token}\x01\x01"
                authenticated = self.token is not None and response == expected
                send(f"{tag} OK AUTHENTICATE completed\r\n" if authenticated
                     else f"{tag} NO [AUTHENTICATIONFAILED] bad token\r\n")
            elif not authenticated:
                send(f"{tag} NO authenticate first\r\n")
            elif command in ("EXAMINE", "SELECT"):
                mode = "READ-ONLY" if command == "EXAMINE" else "READ-WRITE"
                send(f"* {len(self.messages)} EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY {self.uidvalidity}] ok\r\n"
                     f"* OK [UIDNEXT {self.next_uid}] ok\r\n* FLAGS (\\Seen \\Deleted)\r\n"
                     f"{tag} OK [{mode}] {command} completed\r\n")
            elif command == "UID":
                sub, _, sub_args = args.partition(" ")
                sub = sub.upper()
                if sub == "SEARCH":
                    send(f"* SEARCH {' '.join(map(str, self._search(sub_args)))}\r\n{tag} OK SEARCH completed\r\n")
                elif sub == "FETCH":
                    self._fetch(sub_args, send)
                    send(f"{tag} OK FETCH completed\r\n")
                else:
                    send(f"{tag} BAD not supported here\r\n")
            else:
                send(f"{tag} BAD not supported here\r\n")

    def _uids(self, spec):
        uids = sorted(self.messages)
        chosen = set()
        for piece in spec.split(","):
            if ":" in piece:
                low, high = piece.split(":")
                top = uids[-1] if uids else 0
                low, high = int(low), top if high == "*" else int(high)
                if low > high:  # RFC 3501: n:* always includes the largest UID
                    low, high = high, low
                chosen |= {u for u in uids if low <= u <= high}
            elif piece.strip().isdigit():
                chosen.add(int(piece))
        return sorted(u for u in chosen if u in self.messages)

    def _search(self, args):
        match = re.search(r"UID (\S+)", args, re.IGNORECASE)
        return self._uids(match.group(1)) if match else sorted(self.messages)

    def _fetch(self, args, send):
        spec, _, items = args.partition(" ")
        for number, uid in enumerate(self._uids(spec), start=1):
            raw = self.messages[uid]
            if "HEADER.FIELDS" in items.upper():
                parsed = email.message_from_bytes(raw, policy=email_policy.compat32)
                value = " ".join(str(parsed.get("Content-Type", "text/plain")).split())
                data = f"Content-Type: {value}\r\n\r\n".encode()
                name = "BODY[HEADER.FIELDS (CONTENT-TYPE)]"
            else:
                data, name = raw, "BODY[]"
            send(f"* {number} FETCH (UID {uid} {name} {{{len(data)}}}\r\n".encode() + data + b")\r\n")
