"""Microsoft 365: Graph `POST /users/{address}/sendMail` with the MIME we built, base64-encoded (text/plain)."""

import base64
from urllib.parse import quote

from providers import oauth
from providers.base import OutgoingMessage, SendResult, Transport, api_url, http_error, http_post, register

GRAPH_API = "https://graph.microsoft.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
IMAP_SCOPE = "https://outlook.office365.com/.default"
IMAP_HOST, IMAP_PORT = "outlook.office365.com", 993


@register
class Microsoft365Transport(Transport):
    kind = "microsoft_365"

    def send(self, message: OutgoingMessage) -> SendResult:
        url = f"{api_url(self.connection, GRAPH_API)}/v1.0/users/{quote(message.mail_from, safe='@')}/sendMail"
        body = base64.b64encode(message.data)
        for attempt in (1, 2):
            token, key = oauth.microsoft_access_token(self.connection, scope=GRAPH_SCOPE)
            response = http_post(url, provider="Microsoft Graph", data=body,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
            if response.status_code == 401 and attempt == 1:
                oauth.forget(key)
                continue
            break
        if not 200 <= response.status_code < 300:
            raise http_error(response, provider="Microsoft Graph")
        # sendMail answers 202 with no body: Graph keeps our Message-ID as internetMessageId.
        request_id = response.headers.get("request-id", "")
        return SendResult(provider_message_id=message.message_id,
                          response=f"{response.status_code} accepted" + (f" request-id {request_id}" if request_id else ""))


def imap_login(connection, mailbox):
    settings = connection.settings or {}
    token, _ = oauth.microsoft_access_token(connection, scope=IMAP_SCOPE)
    return (settings.get("imap_host") or IMAP_HOST, int(settings.get("imap_port") or IMAP_PORT),
            settings.get("imap_security") or "tls", mailbox.address, token)
