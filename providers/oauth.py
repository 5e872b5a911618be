"""OAuth 2 access tokens for the mailbox providers: fetched on demand, cached until shortly before expiry.

Google: a service account with domain-wide delegation (an RS256 JWT assertion naming the mailbox as
`sub`) or a stored refresh token. Microsoft: client credentials for a tenant.
"""

import base64
import hashlib
import json
import threading
import time

from providers.base import PermanentError, TransientError, http_post

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
EARLY_REFRESH_SECONDS = 120

_lock = threading.Lock()
_tokens: dict = {}  # cache key -> (access token, monotonic expiry)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def forget(key):
    with _lock:
        _tokens.pop(key, None)


def clear():
    with _lock:
        _tokens.clear()


def _cached(key, fetch):
    now = time.monotonic()
    with _lock:
        entry = _tokens.get(key)
        if entry and entry[1] - EARLY_REFRESH_SECONDS > now:
            return entry[0]
    token, expires_in = fetch()
    with _lock:
        _tokens[key] = (token, now + float(expires_in or 3600))
    return token


def _token_answer(response, provider):
    if response.status_code == 200:
        try:
            body = response.json()
            return body["access_token"], body.get("expires_in", 3600)
        except (ValueError, KeyError, TypeError):
            raise TransientError(f"{provider} token endpoint sent an unreadable answer.",
                                 reply=f"{response.status_code} {response.text[:300]}")
    reply = f"{response.status_code} {response.text[:300]}"
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientError(f"{provider} token endpoint answered {response.status_code}.", reply=reply)
    raise PermanentError(f"{provider} refused the credentials ({response.status_code}).", reply=reply)


def google_service_account(credentials) -> dict:
    info = credentials.get("service_account_json")
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except ValueError:
            raise PermanentError("service_account_json is not valid JSON.")
    if not isinstance(info, dict) or not info.get("private_key") or not info.get("client_email"):
        raise PermanentError("service_account_json needs client_email and private_key.")
    return info


def google_jwt_assertion(info: dict, *, subject: str, scope: str, now: int | None = None) -> str:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    now = int(now or time.time())
    header = {"alg": "RS256", "typ": "JWT"}
    if info.get("private_key_id"):
        header["kid"] = info["private_key_id"]
    claims = {"iss": info["client_email"], "sub": subject, "scope": scope,
              "aud": info.get("token_uri") or GOOGLE_TOKEN_URL, "iat": now, "exp": now + 3600}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    try:
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise PermanentError("The service account's private_key is not a PEM RSA key.")
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def google_access_token(connection, *, subject: str, scope: str) -> tuple[str, tuple]:
    """(token, cache key) for acting as `subject` (the mailbox) with `scope`."""
    credentials = connection.credentials or {}
    if credentials.get("service_account_json"):
        info = google_service_account(credentials)
        key = ("google", connection.pk, _fingerprint(info.get("client_email"), info.get("private_key_id"),
                                                     str(connection.credentials_updated_at)), subject, scope)

        def fetch():
            assertion = google_jwt_assertion(info, subject=subject, scope=scope)
            response = http_post(info.get("token_uri") or GOOGLE_TOKEN_URL, provider="Google OAuth",
                                 data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                       "assertion": assertion})
            return _token_answer(response, "Google OAuth")
    elif credentials.get("refresh_token"):
        key = ("google", connection.pk, _fingerprint(credentials.get("client_id"),
                                                     str(connection.credentials_updated_at)), "refresh", scope)

        def fetch():
            response = http_post(GOOGLE_TOKEN_URL, provider="Google OAuth", data={
                "grant_type": "refresh_token", "client_id": credentials.get("client_id", ""),
                "client_secret": credentials.get("client_secret", ""),
                "refresh_token": credentials["refresh_token"]})
            return _token_answer(response, "Google OAuth")
    else:
        raise PermanentError("This Google Workspace connection has no service account or refresh token.")
    return _cached(key, fetch), key


def microsoft_access_token(connection, *, scope: str) -> tuple[str, tuple]:
    credentials = connection.credentials or {}
    tenant = credentials.get("tenant_id")
    if not tenant or not credentials.get("client_id") or not credentials.get("client_secret"):
        raise PermanentError("This Microsoft 365 connection needs tenant_id, client_id and client_secret.")
    key = ("microsoft", connection.pk, _fingerprint(tenant, credentials.get("client_id"),
                                                    str(connection.credentials_updated_at)), scope)

    def fetch():
        response = http_post(MICROSOFT_TOKEN_URL.format(tenant=tenant), provider="Microsoft identity platform",
                             data={"grant_type": "client_credentials", "client_id": credentials["client_id"],
                                   "client_secret": credentials["client_secret"], "scope": scope})
        return _token_answer(response, "Microsoft identity platform")

    return _cached(key, fetch), key
