"""The domain page lists the DNS records to publish, each name and value with a button that copies it."""

import pytest
from django.utils.html import escape

from mailboxes.dns import dkim
from tests.admin.conftest import change_url

pytestmark = pytest.mark.django_db


def test_the_dkim_record_name_and_value_each_have_a_copy_button(login, acme):
    key = dkim.generate_key(domain=acme.domain)

    page = login("operator").get(change_url(acme.domain)).content.decode()

    start = page.index('id="records-to-publish"')
    records = page[start:page.index("</table>", start)]
    name = f"{key.selector}._domainkey.mail.acme.com"
    assert f'data-copy="{escape(name)}"' in records
    assert f'data-copy="{escape(key.txt_value())}"' in records
    quoted = " ".join(f'"{chunk}"' for chunk in key.txt_chunks())  # what zone files and most DNS hosts take
    assert len(key.txt_chunks()) > 1 and f'data-copy="{escape(quoted)}"' in records
    assert 'data-copy="_dmarc.mail.acme.com"' in records
    assert "copy.js" in page
