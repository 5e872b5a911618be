"""Google Workspace: Gmail API `users.messages.send` with the exact MIME we built (raw, base64url)."""

import base64

from providers import oauth
from providers.base import (
    OutgoingMessage, PermanentError, SendResult, TransientError, Transport, api_url, http_error, http_post, register,
)

GMAIL_API = "https://gmail.googleapis.com"
SEND_SCOPE = "https://www.googleapis.com/auth/gmail.send"
IMAP_SCOPE = "https://mail.google.com/"
IMAP_HOST, IMAP_PORT = "imap.gmail.com", 993
# Gmail reports per-user quota exhaustion as 403 with these reasons: wait, don't give up.
TRANSIENT_403_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "dailyLimitExceeded", "quotaExceeded"}


def _reasons(response):
    try:
        error = response.json().get("error", {})
    except ValueError:
        return set()
    return {e.get("reason") for e in error.get("errors", []) if isinstance(e, dict)}


@register
class GoogleWorkspaceTransport(Transport):
    kind = "google_workspace"

    def send(self, message: OutgoingMessage) -> SendResult:
        url = f"{api_url(self.connection, GMAIL_API)}/gmail/v1/users/me/messages/send"
        body = {"raw": base64.urlsafe_b64encode(message.data).decode()}
        for attempt in (1, 2):
            token, key = oauth.google_access_token(self.connection, subject=message.mail_from, scope=SEND_SCOPE)
            response = http_post(url, provider="Gmail", json=body, headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 401 and attempt == 1:
                oauth.forget(key)  # revoked or expired early: fetch a new token once
                continue
            break
        if response.status_code == 403 and _reasons(response) & TRANSIENT_403_REASONS:
            raise TransientError("Gmail's sending quota is exhausted for now.",
                                 reply=f"403 {response.text[:500]}")
        if not 200 <= response.status_code < 300:
            raise http_error(response, provider="Gmail")
        try:
            gmail_id = response.json()["id"]
        except (ValueError, KeyError, TypeError):
            raise PermanentError("Gmail accepted the request but sent no message id.",
                                 reply=f"{response.status_code} {response.text[:500]}")
        return SendResult(provider_message_id=gmail_id, response=f"{response.status_code} gmail id {gmail_id}")


def imap_login(connection, mailbox):
    """(host, port, security, username, XOAUTH2 token) for reading the mailbox's inbox."""
    settings = connection.settings or {}
    token, _ = oauth.google_access_token(connection, subject=mailbox.address, scope=IMAP_SCOPE)
    return (settings.get("imap_host") or IMAP_HOST, int(settings.get("imap_port") or IMAP_PORT),
            settings.get("imap_security") or "tls", mailbox.address, token)
