"""A small authoritative DNS server on loopback (UDP and TCP, one random port), built on dnspython.

    server = DnsServer().start()
    server.add("acme.test", "TXT", "v=spf1 -all")
    server.add("acme.test", "MX", "10 mx.acme.test")
    server.silence("slow.test")        # never answers: queries time out
    server.servfail("broken.test")     # answers SERVFAIL
    server.latency = 0.05              # every answer 50 ms late, without holding up the others
    ...
    server.stop()

Names are answered as the records say: a name with records but none of the asked type is an empty
answer (NODATA), an unknown name is NXDOMAIN, CNAMEs are followed inside the server's data. Answers
larger than the client's UDP size come back truncated, so clients retry over TCP.
"""

import heapq
import socket
import struct
import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

TTL = 60


def txt(value: str | list) -> str:
    """A TXT value in zone-file form, split into 255-byte strings (or the given strings, in order)."""
    chunks = value if isinstance(value, list) else [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class DnsServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = None
        self.latency = 0.0
        self.queries = 0
        self._records = {}  # name -> {rdtype: [text]}
        self._answers = {}  # (name, type, EDNS, size) -> response wire, built once per change of the data
        self._silent = set()
        self._servfail = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._delayed = []  # heap of (due, seq, payload, address)
        self._delayed_ready = threading.Condition()
        self._seq = 0
        self._threads = []

    # Data ------------------------------------------------------------------------------------

    def add(self, name: str, rdtype: str, *values: str):
        """Adds records; TXT values are given plain (or as a list of strings) and quoted here."""
        rdtype = rdtype.upper()
        texts = [txt(v) if rdtype == "TXT" else v for v in values]
        with self._lock:
            self._records.setdefault(_key(name), {}).setdefault(rdtype, []).extend(texts)
            self._answers.clear()
        return self

    def remove(self, name: str, rdtype: str | None = None):
        with self._lock:
            entry = self._records.get(_key(name), {})
            if rdtype is None:
                entry.clear()
            else:
                entry.pop(rdtype.upper(), None)
            if not entry:
                self._records.pop(_key(name), None)
            self._answers.clear()
        return self

    def set(self, name: str, rdtype: str, *values: str):
        self.remove(name, rdtype)
        return self.add(name, rdtype, *values)

    def silence(self, suffix: str):
        self._silent.add(_key(suffix))
        self._answers.clear()
        return self

    def servfail(self, suffix: str):
        self._servfail.add(_key(suffix))
        self._answers.clear()
        return self

    @property
    def nameserver(self) -> str:
        return f"{self.host}:{self.port}"

    # Answers ---------------------------------------------------------------------------------

    def answer(self, query: dns.message.Message):
        """The response to `query`, or None to stay silent."""
        self.queries += 1
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname = _key(question.name.to_text())
        if _under(qname, self._silent):
            return None
        if _under(qname, self._servfail):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        qtype = dns.rdatatype.to_text(question.rdtype)
        name = qname
        with self._lock:
            for _ in range(8):
                entry = self._records.get(name)
                if entry is None:
                    if name == qname and not self._has_descendants(name):
                        response.set_rcode(dns.rcode.NXDOMAIN)
                    return response
                if qtype != "CNAME" and "CNAME" in entry:
                    target = entry["CNAME"][0]
                    response.answer.append(dns.rrset.from_text(name + ".", TTL, "IN", "CNAME", target))
                    name = _key(target)
                    continue
                if qtype in entry:
                    response.answer.append(dns.rrset.from_text(name + ".", TTL, "IN", qtype, *entry[qtype]))
                return response
        return response

    def _has_descendants(self, name: str) -> bool:
        suffix = "." + name
        return any(key.endswith(suffix) for key in self._records)

    def respond(self, query: dns.message.Message, max_size: int = 65535):
        """The response's wire form, or None to stay silent. Answers are built once and reused (with the
        query's id) until the data changes, so a benchmark measures the client rather than this server."""
        if not query.question:
            return self._build(query, max_size)
        question = query.question[0]
        key = (question.name, question.rdtype, query.edns, query.payload, max_size, bool(query.flags & dns.flags.RD))
        wire = self._answers.get(key)
        if wire is None:
            wire = self._build(query, max_size)
            if wire is None:
                return None
            self._answers[key] = wire
        else:
            self.queries += 1
        return query.id.to_bytes(2, "big") + wire[2:]

    def _build(self, query, max_size):
        response = self.answer(query)
        if response is None:
            return None
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            return truncated.to_wire()

    # Serving ---------------------------------------------------------------------------------

    def start(self):
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            break
        else:
            raise RuntimeError("No free port for the DNS server")
        tcp.listen(64)
        udp.settimeout(0.2)
        tcp.settimeout(0.2)
        self._udp, self._tcp, self.port = udp, tcp, port
        for target in (self._serve_udp, self._serve_tcp, self._send_delayed):
            thread = threading.Thread(target=target, daemon=True, name=f"dns-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self):
        self._stopping.set()
        with self._delayed_ready:
            self._delayed_ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._udp.close()
        self._tcp.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _serve_udp(self):
        while not self._stopping.is_set():
            try:
                data, address = self._udp.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            max_size = max(512, query.payload) if query.edns >= 0 else 512
            wire = self.respond(query, max_size)
            if wire is None:
                continue
            if self.latency:
                with self._delayed_ready:
                    self._seq += 1
                    heapq.heappush(self._delayed, (time.monotonic() + self.latency, self._seq, wire, address))
                    self._delayed_ready.notify()
            else:
                self._udp.sendto(wire, address)

    def _send_delayed(self):
        while not self._stopping.is_set():
            with self._delayed_ready:
                while not self._stopping.is_set():
                    wait = self._delayed[0][0] - time.monotonic() if self._delayed else 0.2
                    if self._delayed and wait <= 0:
                        _, _, wire, address = heapq.heappop(self._delayed)
                        break
                    self._delayed_ready.wait(timeout=max(wait, 0.001))
                else:
                    return
            try:
                self._udp.sendto(wire, address)
            except OSError:
                pass

    def _serve_tcp(self):
        while not self._stopping.is_set():
            try:
                conn, _ = self._tcp.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn):
        conn.settimeout(5)
        with conn:
            while not self._stopping.is_set():
                header = _read_exactly(conn, 2)
                if header is None:
                    return
                data = _read_exactly(conn, struct.unpack("!H", header)[0])
                if data is None:
                    return
                try:
                    query = dns.message.from_wire(data)
                except Exception:
                    return
                wire = self.respond(query)
                if wire is None:
                    continue
                if self.latency:
                    time.sleep(self.latency)
                conn.sendall(struct.pack("!H", len(wire)) + wire)


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def _under(name: str, suffixes) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def _read_exactly(conn, size):
    data = b""
    while len(data) < size:
        try:
            chunk = conn.recv(size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data
