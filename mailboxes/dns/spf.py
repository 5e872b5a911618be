"""SPF records (RFC 7208): parsing, and a walk through includes and redirects that counts look-ups.

The walk expands every branch, as a receiver may have to in the worst case: each include, a, mx,
ptr, exists and redirect counts towards the limit of 10, and names that do not exist or have no
records count as void look-ups (limit 2), wherever they sit in the tree (§4.6.4).
"""

import ipaddress
import re
from dataclasses import dataclass, field

from mailboxes.dns.resolver import Lookup

LOOKUP_LIMIT = 10
VOID_LIMIT = 2
MX_NAME_LIMIT = 10
# Beyond this the walk stops: the record is already far over the limit, or loops.
WALK_CEILING = 40

MECHANISMS = {"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"}
QUERYING = {"include", "a", "mx", "ptr", "exists"}
MECHANISM_RE = re.compile(r"^([+\-~?]?)([a-z0-9]+)(?:(:)(.*?))?(?:(/\d+)?(//\d+)?)$", re.IGNORECASE)
MODIFIER_RE = re.compile(r"^([a-z][a-z0-9_.\-]*)=(.*)$", re.IGNORECASE)
# Macros other than %{d} need the connecting client (its IP, HELO, sender): the walk cannot follow them.
UNRESOLVABLE_MACRO_RE = re.compile(r"%\{[^dD}]", re.IGNORECASE)

QUALIFIER_WORDS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


def is_spf(text: str) -> bool:
    text = text.strip()
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


@dataclass
class Term:
    qualifier: str
    mechanism: str
    value: str = ""
    cidr4: int | None = None
    cidr6: int | None = None
    raw: str = ""


@dataclass
class Parsed:
    terms: list = field(default_factory=list)
    redirect: str | None = None
    errors: list = field(default_factory=list)

    @property
    def all_term(self):
        return next((t for t in self.terms if t.mechanism == "all"), None)


def parse(record: str) -> Parsed:
    parsed = Parsed()
    tokens = record.split()
    for token in tokens[1:]:
        match = MECHANISM_RE.match(token)
        if match and match.group(2).lower() in MECHANISMS:
            qualifier, mechanism, colon, value, cidr4, cidr6 = match.groups()
            mechanism = mechanism.lower()
            term = Term(qualifier or "+", mechanism, (value or "").strip(), raw=token,
                        cidr4=int(cidr4[1:]) if cidr4 else None, cidr6=int(cidr6[2:]) if cidr6 else None)
            problem = _term_problem(term, colon)
            if problem:
                parsed.errors.append(problem)
            else:
                parsed.terms.append(term)
            continue
        modifier = MODIFIER_RE.match(token)
        if modifier:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name == "redirect":
                if parsed.redirect is not None:
                    parsed.errors.append("it has more than one redirect= modifier")
                elif not value:
                    parsed.errors.append("redirect= has no domain")
                else:
                    parsed.redirect = value
            continue  # exp= and unknown modifiers do not change the result
        parsed.errors.append(f"“{token}” is not a valid SPF term")
    return parsed


def _term_problem(term: Term, colon) -> str | None:
    if term.mechanism == "all":
        return f"“{term.raw}” is not a valid SPF term" if colon or term.cidr4 or term.cidr6 else None
    if term.mechanism in ("include", "exists") and not term.value:
        return f"“{term.raw}” names no domain"
    if term.mechanism in ("ip4", "ip6"):
        version = 4 if term.mechanism == "ip4" else 6
        cidr = term.cidr4 if term.cidr4 is not None else term.cidr6
        if term.cidr6 is not None and version == 4:
            return f"“{term.raw}” is not a valid IPv4 network"
        try:
            network = ipaddress.ip_network(f"{term.value}/{cidr}" if cidr is not None else term.value, strict=False)
        except ValueError:
            return f"“{term.raw}” is not a valid IPv{version} network"
        if network.version != version:
            return f"“{term.raw}” is not a valid IPv{version} network"
        term.value = str(network)
        return None
    if (term.cidr4 is not None and term.cidr4 > 32) or (term.cidr6 is not None and term.cidr6 > 128):
        return f"“{term.raw}” has an invalid prefix length"
    return None


def expand_domain(spec: str, domain: str) -> str | None:
    """The target of a domain-spec with %{d} expanded; None when it needs the client's details."""
    if UNRESOLVABLE_MACRO_RE.search(spec):
        return None
    expanded = re.sub(r"%\{d\}", domain, spec, flags=re.IGNORECASE)
    expanded = expanded.replace("%%", "%").replace("%_", " ").replace("%-", "%20")
    return expanded.rstrip(".").lower()


@dataclass
class Walk:
    """What evaluating the record could touch: look-ups, void look-ups, includes, networks, problems."""

    domain: str
    lookup: Lookup
    lookups: list = field(default_factory=list)  # "include:_spf.google.com", in walk order
    void: list = field(default_factory=list)  # names that did not exist or had no records
    includes: set = field(default_factory=set)  # include and redirect targets, lower case
    networks: list = field(default_factory=list)  # ip4/ip6, a and mx networks
    records: list = field(default_factory=list)  # nested SPF records seen, "name TXT value"
    permerrors: list = field(default_factory=list)  # sentences: make receivers' SPF fail
    temperrors: list = field(default_factory=list)  # sentences: look-ups that could not be answered
    uses_ptr: bool = False
    all_qualifier: str | None = None  # the effective all of the top record (through redirect)
    all_unknown: bool = False  # the redirect target could not be read

    def run(self, record: str):
        self.all_qualifier = self._walk(self.domain, record, stack=(self.domain,))

    def _count(self, term_text: str) -> bool:
        self.lookups.append(term_text)
        if len(self.lookups) > WALK_CEILING:
            self.all_unknown = True  # the walk stops here: what follows is not read
            return False
        return True

    def _fetch_spf(self, name: str, via: str, stack) -> str | None:
        answer = self.lookup(name, "TXT")
        if answer.failed:
            self.temperrors.append(f"the SPF record of {name} ({via}) could not be read: {answer.error}")
            return None
        if answer.void:
            self.void.append(name)
        records = [v for v in answer.values if is_spf(v)]
        if not records:
            self.permerrors.append(f"{via} points at {name}, which has no SPF record")
            return None
        if len(records) > 1:
            self.permerrors.append(f"{via} points at {name}, which has {len(records)} SPF records")
            return None
        if name in stack:
            self.permerrors.append(f"{via} loops back to {name}")
            return None
        self.records.append(f"{name} TXT {records[0]}")
        return records[0]

    def _walk(self, domain: str, record: str, stack) -> str | None:
        parsed = parse(record)
        for problem in parsed.errors:
            self.permerrors.append(f"in {domain}'s record, {problem}" if domain != self.domain else problem)
        for term in parsed.terms:
            label = term.raw.lstrip("+")
            if term.mechanism in QUERYING and not self._count(label):
                return None
            if term.mechanism == "include":
                target = expand_domain(term.value, domain)
                if target is None:
                    continue
                self.includes.add(target)
                nested = self._fetch_spf(target, label, stack)
                if nested is not None and len(stack) < 12:
                    self._walk(target, nested, stack + (target,))
            elif term.mechanism in ("a", "mx"):
                target = expand_domain(term.value or domain, domain)
                if target is not None:
                    self._addresses_for(term, target, label)
            elif term.mechanism == "exists":
                target = expand_domain(term.value, domain)
                if target is not None:
                    answer = self.lookup(target, "A")
                    if answer.void:
                        self.void.append(target)
            elif term.mechanism == "ptr":
                self.uses_ptr = True
            elif term.mechanism in ("ip4", "ip6"):
                self.networks.append(ipaddress.ip_network(term.value, strict=False))
        all_term = parsed.all_term
        if all_term is not None:
            return all_term.qualifier
        if parsed.redirect:
            label = f"redirect={parsed.redirect}"
            if not self._count(label):
                return None
            target = expand_domain(parsed.redirect, domain)
            if target is None:
                return None
            self.includes.add(target)
            nested = self._fetch_spf(target, label, stack)
            if nested is None:
                self.all_unknown = True
                return None
            return self._walk(target, nested, stack + (target,))
        return None

    def _addresses_for(self, term: Term, target: str, label: str):
        hosts = [target]
        if term.mechanism == "mx":
            answer = self.lookup(target, "MX")
            if answer.failed:
                self.temperrors.append(f"{label}: the MX of {target} could not be read: {answer.error}")
                return
            if answer.void:
                self.void.append(target)
                return
            hosts = [v.split()[1] for v in answer.values if v.split()[1] != "."]
            if len(hosts) > MX_NAME_LIMIT:
                self.permerrors.append(f"{label} names {len(hosts)} mail servers (limit {MX_NAME_LIMIT})")
                return
        for host in hosts:
            answer = self.lookup(host, "A")
            if answer.void:
                answer = self.lookup(host, "AAAA")
            if answer.failed:
                self.temperrors.append(f"{label}: the address of {host} could not be read: {answer.error}")
            elif answer.void:
                if term.mechanism == "a":
                    self.void.append(host)
            else:
                for address in answer.values:
                    ip = ipaddress.ip_address(address)
                    prefix = term.cidr4 if ip.version == 4 else term.cidr6
                    self.networks.append(ipaddress.ip_network(f"{address}/{prefix if prefix is not None else ip.max_prefixlen}",
                                                              strict=False))

    def authorises(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == net.version and ip in net for net in self.networks)
