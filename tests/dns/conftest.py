"""A loopback DNS server the domain checks resolve against, and zones for the cases they must tell apart."""

import base64
import gc

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailboxes.dns import dkim
from mailboxes.models import DkimKey, Mailbox, SendingDomain
from providers.models import ProviderConnection
from tests.dnsserver import DnsServer

DNSBL = "dbl.test"
GOOGLE_SPF = "v=spf1 ip4:35.190.247.0/24 ip4:64.233.160.0/19 ~all"


@pytest.fixture(scope="session")
def keypair():
    """One 2048-bit key for every test domain: generating a key per domain would slow the suite."""
    return dkim.generate_keypair(2048)


@pytest.fixture(scope="session")
def other_public_key():
    return dkim.generate_keypair(2048)[1]


@pytest.fixture(scope="session")
def public_key_1024():
    return dkim.generate_keypair(1024)


def public_key_of_bits(bits: int) -> str:
    """A well-formed RSA public key of any size (cryptography refuses to generate keys under 1024 bits)."""
    modulus = (1 << (bits - 1)) | 0xF00D | 1
    key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


QUERY_TIMEOUT = 0.5


@pytest.fixture
def dns_server(settings):
    # A full collection of the test process's heap can stall every thread for 100 ms or more, long
    # enough to turn a loopback answer into a timeout; frozen objects are left out of collections.
    gc.collect()
    gc.freeze()
    server = DnsServer().start()
    settings.DNS_NAMESERVERS = [server.nameserver]
    settings.DNSBL_ZONES = [DNSBL]
    settings.DNS_QUERY_TIMEOUT = QUERY_TIMEOUT
    server.add("_spf.google.com", "TXT", GOOGLE_SPF)
    server.add("sendgrid.net", "TXT", "v=spf1 ip4:167.89.0.0/17 ~all")
    yield server
    server.stop()
    gc.unfreeze()


@pytest.fixture
def google(workspace):
    return ProviderConnection.objects.create(workspace=workspace, kind="google_workspace", name="Google",
                                             credentials={"client_id": "c", "client_secret": "s", "refresh_token": "t"})


@pytest.fixture
def relay(workspace):
    return ProviderConnection.objects.create(workspace=workspace, kind="smtp", name="Relay",
                                             settings={"host": "127.0.0.1", "port": 2525, "security": "none"},
                                             credentials={"username": "u", "password": "p"})


class Zone:
    """Publishes a sending domain whose every record is right, unless a test says otherwise."""

    def __init__(self, server, workspace, keypair, provider):
        self.server, self.workspace, self.keypair, self.provider = server, workspace, keypair, provider

    def domain(self, name, *, spf="v=spf1 include:_spf.google.com ~all", our_key=None, google_key=None,
               dmarc="v=DMARC1; p=reject; rua=mailto:dmarc@{name}; adkim=r; aspf=s", mx="10 mx.{name}.",
               provider=None, mailbox=True, publish_our_key=True) -> SendingDomain:
        domain = SendingDomain.objects.create(workspace=self.workspace, name=name)
        pem, public = our_key or self.keypair
        key = DkimKey.objects.create(domain=domain, selector="cp1", private_key={"pem": pem}, public_key=public,
                                     key_bits=1024 if our_key else 2048)
        for record in (spf if isinstance(spf, list) else [spf] if spf else []):
            self.server.add(name, "TXT", record)
        if publish_our_key:
            self.server.add(f"cp1._domainkey.{name}", "TXT", key.txt_chunks())
        self.server.add(f"google._domainkey.{name}", "TXT", f"v=DKIM1; k=rsa; p={google_key or self.keypair[1]}")
        for record in (dmarc if isinstance(dmarc, list) else [dmarc] if dmarc else []):
            self.server.add(f"_dmarc.{name}", "TXT", record.format(name=name))
        if mx:
            self.server.add(name, "MX", mx.format(name=name))
            self.server.add(f"mx.{name}", "A", "192.0.2.25")
        if mailbox:
            Mailbox.objects.create(workspace=self.workspace, domain=domain, provider=provider or self.provider,
                                   address=f"jane@{name}")
        return domain


@pytest.fixture
def zone(dns_server, workspace, keypair, google):
    return Zone(dns_server, workspace, keypair, google)

