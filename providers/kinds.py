"""What each provider kind takes (contract §3): settings and credentials, validated in one place."""

from urllib.parse import urlparse

HTTP_KINDS = {"google_workspace", "microsoft_365", "ses", "mailgun", "sendgrid", "postmark"}
# Mailbox kinds whose bounces arrive in the inbox: where the IMAP bounce reader finds it (optional).
IMAP_KINDS = {"smtp", "google_workspace", "microsoft_365"}
IMAP_SETTINGS = {"imap_host", "imap_port", "imap_security"}

# kind -> (settings: {name: required}, credential alternatives: [set of required names, ...])
SPEC = {
    "smtp": ({"host": True, "port": True, "security": True}, [{"username", "password"}, set()]),
    "google_workspace": ({}, [{"service_account_json"}, {"client_id", "client_secret", "refresh_token"}]),
    "microsoft_365": ({}, [{"tenant_id", "client_id", "client_secret"}]),
    "ses": ({"region": True, "max_send_rate": False}, [{"access_key_id", "secret_access_key", "webhook_username", "webhook_password"},
                               {"access_key_id", "secret_access_key"}]),
    "mailgun": ({"domain": True, "region": False}, [{"api_key", "webhook_signing_key"}, {"api_key"}]),
    "sendgrid": ({}, [{"api_key", "webhook_verification_key"}, {"api_key"}]),
    "postmark": ({}, [{"server_token", "webhook_username", "webhook_password"}, {"server_token"}]),
}


def credential_names(kind):
    return set().union(*SPEC[kind][1]) if kind in SPEC else set()


def validate_settings(kind, settings: dict) -> dict:
    """Returns {field: [messages]} for what is wrong; empty when the settings are usable."""
    errors = {}
    if kind not in SPEC:
        return {}
    if not isinstance(settings, dict):
        return {"settings": ["Must be an object."]}
    fields, _ = SPEC[kind]
    allowed = set(fields) | ({"api_url"} if kind in HTTP_KINDS else set()) | (IMAP_SETTINGS if kind in IMAP_KINDS else set())
    for name in sorted(set(settings) - allowed):
        errors[name] = [f"Unknown setting for {kind}; allowed: {', '.join(sorted(allowed)) or 'none'}."]
    for name, required in fields.items():
        if required and settings.get(name) in (None, ""):
            errors[name] = ["This setting is required."]
    if kind == "smtp":
        port = settings.get("port")
        if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535):
            errors["port"] = ["Must be a whole number between 1 and 65535."]
        if settings.get("security") not in (None, "", "starttls", "tls", "none"):
            errors["security"] = ["Must be one of starttls, tls, none."]
    imap_port = settings.get("imap_port")
    if imap_port not in (None, "") and (not isinstance(imap_port, int) or isinstance(imap_port, bool)
                                        or not 1 <= imap_port <= 65535):
        errors["imap_port"] = ["Must be a whole number between 1 and 65535."]
    if settings.get("imap_security") not in (None, "", "tls", "starttls", "none"):
        errors["imap_security"] = ["Must be one of tls, starttls, none."]
    if kind == "mailgun" and settings.get("region") not in (None, "", "us", "eu"):
        errors["region"] = ["Must be us or eu."]
    api_url = settings.get("api_url")
    if api_url not in (None, ""):
        parsed = urlparse(str(api_url))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            errors["api_url"] = ["Must be an absolute http(s) URL."]
    return {f"settings.{k}" if k != "settings" else k: v for k, v in errors.items()}


def validate_credentials(kind, credentials: dict) -> dict:
    if kind not in SPEC:
        return {}
    if not isinstance(credentials, dict):
        return {"credentials": ["Must be an object."]}
    _, alternatives = SPEC[kind]
    allowed = credential_names(kind)
    unknown = sorted(set(credentials) - allowed)
    if unknown:
        return {"credentials": [f"Unknown credential(s) for {kind}: {', '.join(unknown)}."]}
    present = {k for k, v in credentials.items() if v not in (None, "")}
    satisfied = [option for option in alternatives if option <= present]
    covered = set().union(*satisfied) if satisfied else set()
    if not satisfied or not present <= covered:
        options = " or ".join("{" + ", ".join(sorted(o)) + "}" for o in alternatives if o)
        return {"credentials": [f"{kind} needs {options}."]}
    return {}
