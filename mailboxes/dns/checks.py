"""The five checks of a sending domain: SPF, DKIM, DMARC, MX and blocklists.

Each check returns `{"status", "message", "records"}`: `status` is `pass`, `warn`, `fail` or
`unknown`, `message` is a sentence naming the problem (or what is right), `records` the raw records
seen as `name TYPE value` lines. A look-up that times out or answers SERVFAIL makes a check
`unknown`, never `fail`: a failure must come from what a receiver would see.

A domain's status is the worst of its checks, ranked fail > warn > unknown > pass: a known problem
outranks a question we could not answer, and an unanswered question outranks a clean bill.

The checks do DNS only (no database), so a run can spread them over threads.
"""

import base64
import binascii
import ipaddress
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.conf import settings

from mailboxes.dns import spf as spf_module
from mailboxes.dns.resolver import Lookup

CHECK_NAMES = ["spf", "dkim", "dmarc", "mx", "blocklists"]
AUTH_CHECKS = ["spf", "dkim", "dmarc"]
STATUS_RANK = {"pass": 0, "unknown": 1, "warn": 2, "fail": 3}
CHECK_LABELS = {"spf": "SPF", "dkim": "DKIM", "dmarc": "DMARC", "mx": "MX", "blocklists": "Blocklists"}


@dataclass(frozen=True)
class Provider:
    label: str
    spf_includes: tuple = ()
    dkim_selectors: tuple = ()


# What each provider kind needs in DNS: the SPF include it sends under and its usual DKIM selectors.
# SES (Easy DKIM) and Postmark use per-domain selectors that cannot be guessed.
PROVIDERS = {
    "google_workspace": Provider("Google Workspace", ("_spf.google.com",), ("google",)),
    "microsoft_365": Provider("Microsoft 365", ("spf.protection.outlook.com",), ("selector1", "selector2")),
    "ses": Provider("Amazon SES", ("amazonses.com",)),
    "mailgun": Provider("Mailgun", ("mailgun.org", "eu.mailgun.org"), ("k1", "smtp", "mx", "pic", "krs", "mta")),
    "sendgrid": Provider("SendGrid", ("sendgrid.net",), ("s1", "s2")),
    "postmark": Provider("Postmark", ("spf.mtasv.net",)),
}

# Well-known SMTP relays and the provider whose SPF include covers them.
SMTP_HOST_PROVIDERS = {
    "smtp.gmail.com": "google_workspace", "smtp-relay.gmail.com": "google_workspace",
    "smtp.office365.com": "microsoft_365", "smtp-mail.outlook.com": "microsoft_365",
    "smtp.mailgun.org": "mailgun", "smtp.eu.mailgun.org": "mailgun",
    "smtp.sendgrid.net": "sendgrid", "smtp.postmarkapp.com": "postmark",
}

# Public suffixes of two labels, for finding the organisational domain of a DMARC policy.
TWO_LABEL_SUFFIXES = {
    "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk", "com.au", "net.au", "org.au", "co.nz",
    "org.nz", "co.jp", "ne.jp", "com.br", "com.mx", "co.za", "co.in", "com.cn", "com.sg", "com.tr", "com.hk",
    "co.kr", "com.tw", "co.il", "com.ar", "com.es", "com.pl",
}

DNSBL_REFUSALS = {
    "127.255.255.252": "the query was malformed",
    "127.255.255.254": "queries through public or open resolvers are refused",
    "127.255.255.255": "too many queries",
}


@dataclass
class OurKey:
    selector: str
    public_key: str  # base64 DER SubjectPublicKeyInfo
    active: bool


@dataclass
class DomainFacts:
    """What the checks need to know about a domain, read from the database before the DNS work."""

    name: str
    provider_kinds: set = field(default_factory=set)
    smtp_hosts: list = field(default_factory=list)
    our_keys: list = field(default_factory=list)


def result(status: str, message: str, records=None) -> dict:
    return {"status": status, "message": message, "records": list(records or [])}


def worst(statuses) -> str:
    statuses = list(statuses)
    return max(statuses, key=STATUS_RANK.__getitem__) if statuses else "pass"


def summarise(problems: list, pass_message: str, records) -> dict:
    """`problems` are (status, sentence); the check takes the worst, and names them worst first."""
    if not problems:
        return result("pass", pass_message, records)
    ordered = sorted(problems, key=lambda p: -STATUS_RANK[p[0]])
    status = ordered[0][0]
    return result(status, " ".join(sentence for _, sentence in ordered), records)


def check_domain(facts: DomainFacts, lookup: Lookup) -> dict:
    return {
        "spf": check_spf(facts, lookup),
        "dkim": check_dkim(facts, lookup),
        "dmarc": check_dmarc(facts, lookup),
        "mx": check_mx(facts, lookup),
        "blocklists": check_blocklists(facts, lookup),
    }


# SPF ---------------------------------------------------------------------------------------------

def check_spf(facts: DomainFacts, lookup: Lookup) -> dict:
    name = facts.name
    answer = lookup(name, "TXT")
    if answer.failed:
        return result("unknown", f"Could not read the SPF record of {name}: {answer.error}.")
    records = [v for v in answer.values if spf_module.is_spf(v)]
    seen = [f"{name} TXT {v}" for v in records]
    if not records:
        return result("fail", f"No SPF record at {name}: publish one TXT record starting with v=spf1 that "
                              "authorises your providers and ends in ~all or -all.")
    if len(records) > 1:
        return result("fail", f"{name} has {len(records)} SPF records; receivers treat more than one as a "
                              "permanent error (RFC 7208 §4.5): merge them into one.", seen)

    walk = spf_module.Walk(domain=name, lookup=lookup)
    walk.run(records[0])
    seen += walk.records
    problems = []
    for problem in walk.permerrors:
        problems.append(("fail", f"SPF for {name} is broken: {problem}; receivers fail it with permerror."))
    count = len(walk.lookups)
    if count > spf_module.LOOKUP_LIMIT:
        terms = ", ".join(walk.lookups[:15]) + (", …" if count > 15 else "")
        more = "at least " if count > spf_module.WALK_CEILING else ""
        problems.append(("fail", f"SPF for {name} needs {more}{count} DNS look-ups through its includes, over "
                                 f"the limit of {spf_module.LOOKUP_LIMIT} (RFC 7208 §4.6.4), so receivers fail it "
                                 f"with permerror ({terms})."))
    if len(walk.void) > spf_module.VOID_LIMIT:
        problems.append(("fail", f"SPF for {name} makes {len(walk.void)} void look-ups (names with no records: "
                                 f"{', '.join(walk.void)}), over the limit of {spf_module.VOID_LIMIT} "
                                 "(RFC 7208 §4.6.4), so receivers fail it with permerror."))
    if walk.all_qualifier == "+":
        problems.append(("fail", f"SPF for {name} ends in +all, which lets any server in the world send as "
                                 f"{name}: end it with ~all or -all."))
    elif walk.all_qualifier == "?":
        problems.append(("fail", f"SPF for {name} ends in ?all (neutral), which vouches for no server: end it "
                                 "with ~all or -all."))
    elif walk.all_qualifier is None and not walk.all_unknown:
        problems.append(("fail", f"SPF for {name} has no all term, so servers it does not list get a neutral "
                                 "result: end it with ~all or -all."))
    problems += _spf_provider_problems(facts, walk, lookup)
    if walk.uses_ptr:
        problems.append(("warn", f"SPF for {name} uses the ptr mechanism, which is slow and which many "
                                 "receivers ignore (RFC 7208 §5.5): list the addresses instead."))
    for problem in walk.temperrors:
        problems.append(("unknown", f"SPF for {name} could not be fully checked: {problem}."))

    authorised = sorted({PROVIDERS[k].label for k in facts.provider_kinds if k in PROVIDERS})
    who = f"authorises {', '.join(authorised)} and " if authorised else ""
    ending = {"-": "-all", "~": "~all"}.get(walk.all_qualifier, "all")
    return summarise(problems, f"SPF {who}ends in {ending} ({count} of {spf_module.LOOKUP_LIMIT} DNS look-ups).",
                     seen)


def _spf_provider_problems(facts: DomainFacts, walk, lookup: Lookup) -> list:
    name = facts.name
    problems = []
    # An include inside a branch we could not read might be the one we are looking for.
    missing_status = "unknown" if walk.temperrors else "fail"
    for kind in sorted(facts.provider_kinds):
        provider = PROVIDERS.get(kind)
        if provider is None or not provider.spf_includes:
            continue
        if not walk.includes.intersection(provider.spf_includes):
            problems.append((missing_status, f"SPF for {name} does not authorise {provider.label}, which sends "
                                             f"for this domain: add include:{provider.spf_includes[0]}."))
    for host in facts.smtp_hosts:
        host = host.strip().rstrip(".").lower()
        known = SMTP_HOST_PROVIDERS.get(host)
        if known is None and host.startswith("email-smtp.") and host.endswith(".amazonaws.com"):
            known = "ses"
        if known is not None:
            provider = PROVIDERS[known]
            if not walk.includes.intersection(provider.spf_includes):
                problems.append((missing_status, f"SPF for {name} does not authorise the SMTP server {host} "
                                                 f"({provider.label}): add include:{provider.spf_includes[0]}."))
            continue
        problem = _smtp_host_problem(name, host, walk, lookup, missing_status)
        if problem:
            problems.append(problem)
    return problems


def _smtp_host_problem(name: str, host: str, walk, lookup: Lookup, missing_status: str):
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        answer = lookup(host, "A")
        if answer.void:
            answer = lookup(host, "AAAA")
        if answer.failed:
            return ("unknown", f"Could not confirm that SPF for {name} authorises the SMTP server {host}: "
                               f"its address could not be read ({answer.error}).")
        if answer.void:
            return ("warn", f"The SMTP server {host} has no address in DNS, so SPF for {name} cannot be "
                            "matched against it.")
        addresses = answer.values
    public = [a for a in addresses if ipaddress.ip_address(a).is_global]
    if not public:
        return None  # a relay on a private network sends on from an address we cannot see
    host_parts = host.split(".")
    parent = ".".join(host_parts[-2:]) if len(host_parts) >= 2 else host
    if any(inc == host or inc == parent or inc.endswith("." + parent) for inc in walk.includes):
        return None
    if any(walk.authorises(a) for a in public):
        return None
    version = "ip6" if ipaddress.ip_address(public[0]).version == 6 else "ip4"
    return (missing_status, f"SPF for {name} does not authorise the SMTP server {host} ({', '.join(public)}): "
                            f"add its include or {version}:{public[0]}.")


# DKIM --------------------------------------------------------------------------------------------

def dkim_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def parse_tags(value: str) -> dict:
    tags = {}
    for part in value.split(";"):
        if "=" in part:
            key, _, tag_value = part.partition("=")
            tags.setdefault(key.strip().lower(), "".join(tag_value.split()))
    return tags


def load_public_key(p_value: str, key_type: str = "rsa"):
    """The key in a p= value (base64): SubjectPublicKeyInfo, or PKCS#1 as some publish it. None if it does not parse."""
    try:
        raw = base64.b64decode(p_value + "=" * (-len(p_value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if key_type == "ed25519":
        try:
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            return None
    try:
        return serialization.load_der_public_key(raw)
    except (ValueError, TypeError):
        pass
    try:
        pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(raw) + b"-----END RSA PUBLIC KEY-----\n"
        return serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        return None


def _same_key(published, ours_b64: str) -> bool:
    ours = load_public_key(ours_b64)
    if not isinstance(published, rsa.RSAPublicKey) or not isinstance(ours, rsa.RSAPublicKey):
        return False
    return published.public_numbers() == ours.public_numbers()


@dataclass
class SelectorFinding:
    selector: str
    outcome: str  # "ok", "missing", "error", "bad"
    status: str = "pass"  # for "ok"/"bad": the key's own verdict
    problem: str = ""
    description: str = ""  # "RSA 2048"
    key: object = None
    records: list = field(default_factory=list)


def inspect_selector(selector: str, domain: str, lookup: Lookup) -> SelectorFinding:
    name = dkim_name(selector, domain)
    answer = lookup(name, "TXT")
    if answer.failed:
        return SelectorFinding(selector, "error", "unknown", problem=answer.error)
    values = [v for v in answer.values if "p=" in v.replace(" ", "") or v.strip().lower().startswith("v=dkim1")]
    if not values:
        return SelectorFinding(selector, "missing")
    records = [f"{name} TXT {v}" for v in values]
    if len(values) > 1:
        return SelectorFinding(selector, "bad", "fail", f"{name} has {len(values)} DKIM records, so receivers "
                                                         "may pick either", records=records)
    tags = parse_tags(values[0])
    if "v" in tags and tags["v"] != "DKIM1":
        return SelectorFinding(selector, "bad", "fail", f"the record at {name} has v={tags['v']}, not v=DKIM1",
                               records=records)
    if "p" not in tags:
        return SelectorFinding(selector, "bad", "fail", f"the record at {name} has no p= key", records=records)
    if tags["p"] == "":
        return SelectorFinding(selector, "bad", "fail", f"the key at {name} is revoked (empty p=)", records=records)
    key_type = tags.get("k", "rsa").lower()
    if key_type not in ("rsa", "ed25519"):
        return SelectorFinding(selector, "bad", "fail", f"the key at {name} has the unknown type k={key_type}",
                               records=records)
    key = load_public_key(tags["p"], key_type)
    if key is None or (key_type == "rsa" and not isinstance(key, rsa.RSAPublicKey)):
        return SelectorFinding(selector, "bad", "fail", f"the key at {name} does not parse as a {key_type.upper()} "
                                                         "public key", records=records)
    if key_type == "ed25519":
        return SelectorFinding(selector, "ok", "pass", description="Ed25519", key=key, records=records)
    bits = key.key_size
    if bits < 1024:
        return SelectorFinding(selector, "ok", "fail", f"the key at {name} is a {bits}-bit RSA key, and receivers "
                                                        "ignore keys under 1024 bits: publish a 2048-bit key",
                               f"RSA {bits}", key, records)
    if bits < 2048:
        return SelectorFinding(selector, "ok", "warn", f"the key at {name} is a {bits}-bit RSA key: rotate to a "
                                                        "2048-bit key", f"RSA {bits}", key, records)
    return SelectorFinding(selector, "ok", "pass", description=f"RSA {bits}", key=key, records=records)


def check_dkim(facts: DomainFacts, lookup: Lookup) -> dict:
    name = facts.name
    problems, records, good = [], [], []
    checked = {}

    def finding(selector):
        if selector not in checked:
            checked[selector] = inspect_selector(selector, name, lookup)
            records.extend(checked[selector].records)
        return checked[selector]

    ours = [k for k in facts.our_keys]
    for key in sorted(ours, key=lambda k: not k.active):
        found = finding(key.selector)
        record_name = dkim_name(key.selector, name)
        role = "the key we sign with" if key.active else "our inactive key (rotation)"
        # A key we do not sign with only needs to be in place before it is activated.
        severity = "fail" if key.active else "warn"
        if found.outcome == "error":
            problems.append(("unknown", f"Could not read {role} at {record_name}: {found.problem}."))
        elif found.outcome == "missing" and key.active:
            problems.append(("fail", f"No DKIM record at {record_name}, the key we sign with: publish the TXT "
                                     "record from records_to_publish."))
        elif found.outcome == "missing":
            problems.append(("warn", f"No DKIM record at {record_name} for our inactive key (rotation): publish "
                                     "it before activating the key, or retire the key."))
        elif found.outcome == "bad":
            problems.append((severity, f"DKIM for {name} is broken: {found.problem}."))
        elif not _same_key(found.key, key.public_key):
            problems.append((severity, f"The DKIM key published at {record_name} does not match {role}: publish "
                                       "the TXT record from records_to_publish."))
        else:
            if found.status != "pass":
                problems.append((found.status, f"DKIM for {name}: {found.problem}."))
            good.append(f"{key.selector} (ours, {found.description})")

    for kind in sorted(facts.provider_kinds):
        provider = PROVIDERS.get(kind)
        if provider is None or not provider.dkim_selectors:
            continue
        found_any = False
        unknown = []
        for selector in provider.dkim_selectors:
            found = finding(selector)
            if found.outcome == "error":
                unknown.append(f"{dkim_name(selector, name)} ({found.problem})")
            elif found.outcome == "bad":
                found_any = True
                problems.append(("fail", f"DKIM for {name} is broken: {found.problem}."))
            elif found.outcome == "ok":
                found_any = True
                if found.status != "pass":
                    problems.append((found.status, f"DKIM for {name}: {found.problem}."))
                good.append(f"{selector} ({provider.label}, {found.description})")
        if not found_any:
            if unknown:
                problems.append(("unknown", f"Could not read the {provider.label} DKIM key: {', '.join(unknown)}."))
            else:
                names = " or ".join(dkim_name(s, name) for s in provider.dkim_selectors)
                problems.append(("warn", f"No {provider.label} DKIM key at {names}: turn on DKIM signing for "
                                         f"{name} in {provider.label} (with a custom selector, ignore this)."))

    if "smtp" in facts.provider_kinds and not any(k.active for k in facts.our_keys):
        problems.append(("warn", f"Mail sent over SMTP from {name} is not DKIM-signed: generate a DKIM key for it."))
    if not checked and not problems:
        return result("unknown", f"No DKIM selector is known for {name}: generate a DKIM key, or check the "
                                 "selector your provider gave you.")
    good_text = ", ".join(dict.fromkeys(good))
    return summarise(problems, f"DKIM keys are published and valid: {good_text}.", records)


# DMARC -------------------------------------------------------------------------------------------

def organisational_domain(name: str) -> str:
    labels = name.split(".")
    if len(labels) > 2 and ".".join(labels[-2:]) in TWO_LABEL_SUFFIXES:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _dmarc_records(domain: str, lookup: Lookup):
    answer = lookup(f"_dmarc.{domain}", "TXT")
    if answer.failed:
        return answer, []
    return answer, [v for v in answer.values if v.strip().lower().replace(" ", "").startswith("v=dmarc1")]


def check_dmarc(facts: DomainFacts, lookup: Lookup) -> dict:
    name = facts.name
    record_name = f"_dmarc.{name}"
    answer, records = _dmarc_records(name, lookup)
    if answer.failed:
        return result("unknown", f"Could not read the DMARC record at {record_name}: {answer.error}.")
    inherited_from = None
    if not records:
        org = organisational_domain(name)
        if org != name:
            org_answer, org_records = _dmarc_records(org, lookup)
            if org_answer.failed:
                return result("unknown", f"No DMARC record at {record_name}, and the one of {org} could not be "
                                         f"read: {org_answer.error}.")
            if org_records:
                records, record_name, inherited_from = org_records, f"_dmarc.{org}", org
    if not records:
        return result("fail", f"No DMARC record at {record_name}: publish one (for example "
                              f"“v=DMARC1; p=quarantine; rua=mailto:dmarc@{name}”); large mailbox providers "
                              "require it of bulk senders.")
    seen = [f"{record_name} TXT {v}" for v in records]
    if len(records) > 1:
        return result("fail", f"There are {len(records)} DMARC records at {record_name}; receivers then apply "
                              "none of them (RFC 7489 §6.6.3): keep one.", seen)
    tags = parse_tags(records[0])
    policy = tags.get("sp", tags.get("p", "")) if inherited_from else tags.get("p", "")
    policy = policy.lower()
    if policy not in ("none", "quarantine", "reject"):
        shown = f"p={policy}" if policy else "no p= policy"
        return result("fail", f"The DMARC record at {record_name} has {shown}; it needs p=none, quarantine or "
                              "reject.", seen)
    alignment = (f"DKIM {'strict' if tags.get('adkim', 'r').lower() == 's' else 'relaxed'}, "
                 f"SPF {'strict' if tags.get('aspf', 'r').lower() == 's' else 'relaxed'}")
    source = f" (inherited from {inherited_from})" if inherited_from else ""
    problems = []
    if policy == "none":
        problems.append(("warn", f"The DMARC policy for {name} is p=none{source}: receivers only report and never "
                                 "act on mail that fails; move to p=quarantine or p=reject."))
    rua = tags.get("rua", "")
    if not rua:
        problems.append(("warn", f"The DMARC record at {record_name} has no rua= address, so nobody receives the "
                                 "aggregate reports."))
    if problems:
        checked = summarise(problems, "", seen)
        checked["message"] = f"{checked['message']} Alignment: {alignment}."
        return checked
    return result("pass", f"DMARC policy p={policy}{source}, reports to {rua}; alignment: {alignment}.", seen)


# MX ----------------------------------------------------------------------------------------------

def check_mx(facts: DomainFacts, lookup: Lookup) -> dict:
    name = facts.name
    answer = lookup(name, "MX")
    if answer.failed:
        return result("unknown", f"Could not read the MX records of {name}: {answer.error}.")
    if answer.void:
        return result("warn", f"{name} has no MX record: bounces and replies to it cannot be delivered.")
    records = answer.records()
    hosts = sorted((int(v.split()[0]), v.split()[1]) for v in answer.values)
    if all(host == "." for _, host in hosts):
        return result("warn", f"{name} publishes a null MX (it accepts no mail): bounces and replies to it are "
                              "lost.", records)
    return result("pass", f"{name} receives mail at " + ", ".join(h for _, h in hosts if h != ".") + ".", records)


# Blocklists --------------------------------------------------------------------------------------

def check_blocklists(facts: DomainFacts, lookup: Lookup, zones=None) -> dict:
    name = facts.name
    zones = list(settings.DNSBL_ZONES if zones is None else zones)
    if not zones:
        return result("pass", "No blocklist zones are configured (DNSBL_ZONES).")
    problems, records, clean = [], [], []
    for zone in zones:
        query = f"{name}.{zone}"
        answer = lookup(query, "A")
        if answer.failed:
            problems.append(("unknown", f"Could not ask {zone} about {name}: {answer.error}."))
            continue
        if answer.void:
            clean.append(zone)
            continue
        records += answer.records()
        codes = sorted(answer.values)
        refusals = [c for c in codes if c.startswith("127.255.255.")]
        listings = [c for c in codes if c.startswith("127.") and c not in refusals]
        if listings:
            reason = lookup(query, "TXT")
            records += reason.records() if reason.ok else []
            why = f": {reason.values[0]}" if reason.ok and reason.values else ""
            problems.append(("fail", f"{name} is listed on {zone} ({', '.join(listings)}){why}."))
        elif refusals:
            meaning = DNSBL_REFUSALS.get(refusals[0], "the zone returned an error code")
            problems.append(("unknown", f"{zone} did not answer whether {name} is listed ({refusals[0]}: {meaning})."))
        else:
            problems.append(("unknown", f"{zone} gave an unexpected answer for {name} ({', '.join(codes)}); a "
                                        "resolver that rewrites unknown names may be in the way."))
    return summarise(problems, f"{name} is not listed on {', '.join(clean)}.", records)
