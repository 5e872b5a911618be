"""DKIM keys we generate (2048-bit RSA, cryptography) and the signer dispatch uses (dkimpy)."""

import base64
import datetime as dt

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from mailboxes.models import DkimKey, SendingDomain

# Headers we sign; List-Unsubscribe and List-Unsubscribe-Post are required (RFC 8058 §4).
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe",
                  b"list-unsubscribe-post", b"mime-version", b"content-type"]


def new_selector(now: dt.datetime | None = None) -> str:
    now = now or timezone.now()
    return f"cp{now:%Y%m%d%H%M%S}"


def generate_keypair(bits: int = 2048) -> tuple[str, str]:
    """(private key PEM, public key base64 DER SubjectPublicKeyInfo)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der).decode()


@transaction.atomic
def generate_key(*, domain: SendingDomain, selector: str | None = None, bits: int = 2048,
                 activate: bool | None = None) -> DkimKey:
    """Adds a key under a new selector. The first key is active at once; a rotation key becomes
    active when `activate_key` is called, so both can be published during the switch."""
    domain = SendingDomain.objects.select_for_update().get(pk=domain.pk)
    has_active = domain.dkim_keys.filter(active=True).exists()
    activate = (not has_active) if activate is None else activate
    if activate and has_active:
        domain.dkim_keys.filter(active=True).update(active=False)
    pem, public = generate_keypair(bits)
    key = DkimKey.objects.create(domain=domain, selector=selector or new_selector(), private_key={"pem": pem},
                                 public_key=public, key_bits=bits, active=activate)
    audit.record(workspace=domain.workspace, action="dkim_key.generated", obj=key,
                 after={"domain": domain.name, "selector": key.selector, "bits": bits, "active": activate,
                        "private_key": "[set]"})
    return key


@transaction.atomic
def activate_key(*, key: DkimKey) -> DkimKey:
    key = DkimKey.objects.select_for_update().select_related("domain__workspace").get(pk=key.pk)
    previous = list(key.domain.dkim_keys.filter(active=True).exclude(pk=key.pk).values_list("selector", flat=True))
    key.domain.dkim_keys.filter(active=True).exclude(pk=key.pk).update(active=False)
    key.active = True
    key.save(update_fields=["active"])
    audit.record(workspace=key.domain.workspace, action="dkim_key.activated", obj=key,
                 before={"active_selectors": previous}, after={"active_selectors": [key.selector]})
    return key


@transaction.atomic
def retire_key(*, key: DkimKey) -> DkimKey:
    key = DkimKey.objects.select_for_update().select_related("domain__workspace").get(pk=key.pk)
    if key.active:
        raise ValueError("The active key cannot be retired; activate another key first.")
    key.retired_at = timezone.now()
    key.save(update_fields=["retired_at"])
    audit.record(workspace=key.domain.workspace, action="dkim_key.retired", obj=key,
                 after={"selector": key.selector})
    return key


def active_key(domain_id) -> DkimKey | None:
    return DkimKey.objects.filter(domain_id=domain_id, active=True).first()


def active_keys(domain_ids) -> dict:
    """{domain id: its active key} for many domains in one query (domains without one are absent)."""
    return {key.domain_id: key for key in DkimKey.objects.filter(domain_id__in=list(domain_ids), active=True)}


def sign(message_bytes: bytes, *, key: DkimKey, domain_name: str) -> bytes:
    """Returns the DKIM-Signature header line (with CRLF) for `message_bytes`."""
    present = {line.split(b":", 1)[0].strip().lower() for line in message_bytes.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
               if b":" in line and not line.startswith((b" ", b"\t"))}
    headers = [h for h in SIGNED_HEADERS if h in present]
    return dkim.sign(message_bytes, key.selector.encode(), domain_name.encode(), key.private_key["pem"].encode(),
                     include_headers=headers)


def txt_record(name, timeout: float = 5) -> bytes | None:
    """The TXT record at `name` through the configured resolver (DNS_NAMESERVERS), in the form dkimpy's
    `dnsfunc` expects: `dkim.verify(message, dnsfunc=txt_record)`."""
    from mailboxes.dns.resolver import Lookup, build_resolver

    if isinstance(name, bytes):
        name = name.decode("ascii")
    answer = Lookup(build_resolver(timeout=timeout))(name, "TXT")
    if answer.failed:
        raise dkim.DnsTimeoutError(f"{name}: {answer.error}")
    return answer.values[0].encode() if answer.values else None
