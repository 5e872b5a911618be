"""The DNS I/O of the domain checks: a dnspython resolver built from settings, and answers as plain values.

`DNS_NAMESERVERS` lists `host` or `host:port` (IPv6 as `[::1]:53`); empty means the system resolver.
Every query has its own time limit (`DNS_QUERY_TIMEOUT`, seconds, default 3), so one slow name
cannot hold a whole run. A timeout or SERVFAIL becomes an `error` answer: the checks turn it into
`unknown`, never into `fail`.
"""

import ipaddress
import socket
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from django.conf import settings

DEFAULT_TIMEOUT = 3.0


def query_timeout() -> float:
    return float(getattr(settings, "DNS_QUERY_TIMEOUT", DEFAULT_TIMEOUT))


def parse_nameserver(value: str) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:5353`, `::1`, `[::1]:5353` or a host name (resolved once) → (address, port)."""
    value = value.strip()
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = socket.getaddrinfo(host, port, proto=socket.IPPROTO_UDP)[0][4][0]
    return host, port


def build_resolver(*, nameservers=None, timeout: float | None = None) -> dns.resolver.Resolver:
    nameservers = settings.DNS_NAMESERVERS if nameservers is None else nameservers
    timeout = query_timeout() if timeout is None else timeout
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(n)) for n in nameservers]
    else:
        resolver = dns.resolver.Resolver()
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.retry_servfail = False
    resolver.use_edns(0, 0, 1232)
    # One run shares provider includes such as _spf.google.com between its domains.
    resolver.cache = dns.resolver.Cache()
    return resolver


@dataclass
class Answer:
    name: str
    rdtype: str
    outcome: str  # "ok", "nxdomain", "nodata" or "error"
    values: list = field(default_factory=list)  # TXT joined, MX "pref host", A/AAAA addresses, CNAME targets
    error: str = ""  # a phrase: "the name server timed out after 3 s"

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def void(self) -> bool:
        """NXDOMAIN or an empty answer: a "void look-up" in RFC 7208 §4.6.4's sense."""
        return self.outcome in ("nxdomain", "nodata")

    @property
    def failed(self) -> bool:
        return self.outcome == "error"

    def records(self) -> list[str]:
        """The answer as `name TYPE value` lines, for the records a check shows."""
        return [f"{self.name} {self.rdtype} {value}" for value in self.values]


def _value(rdata) -> str:
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdata.rdtype == dns.rdatatype.MX:
        exchange = rdata.exchange.to_text(omit_final_dot=True) if rdata.exchange != dns.name.root else "."
        return f"{rdata.preference} {exchange}"
    return rdata.to_text()


def _failure(exc: Exception, timeout: float) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return f"the name server did not answer within {timeout:g} s"
    if isinstance(exc, dns.resolver.NoNameservers):
        text = str(exc)
        for rcode in ("SERVFAIL", "REFUSED", "NOTIMP", "FORMERR"):
            if rcode in text:
                return f"the name server answered {rcode}"
        return "no name server could answer"
    if isinstance(exc, dns.name.NameTooLong | dns.name.LabelTooLong | dns.name.EmptyLabel):
        return "the name is not a valid DNS name"
    return f"the look-up failed ({exc.__class__.__name__})"


class Lookup:
    """Resolves names to `Answer`s and counts the queries made. Safe to share between threads."""

    def __init__(self, resolver: dns.resolver.Resolver | None = None):
        self.resolver = resolver or build_resolver()

    def __call__(self, name: str, rdtype: str) -> Answer:
        name = name.rstrip(".").lower()
        timeout = self.resolver.lifetime
        try:
            answer = self.resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(name, rdtype, "nxdomain")
        except (dns.exception.DNSException, ValueError, OSError) as exc:
            return Answer(name, rdtype, "error", error=_failure(exc, timeout))
        if answer.rrset is None:
            return Answer(name, rdtype, "nodata")
        values = [_value(rdata) for rdata in answer.rrset]
        return Answer(name, rdtype, "ok", values=values)
