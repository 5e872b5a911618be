import logging
import re

_SECRET_PATTERN = re.compile(
    r"(?i)(\"?(?:password|secret|api_key|token|client_secret|refresh_token|private_key|"
    r"secret_access_key|server_token|service_account_json|webhook_signing_key)\"?\s*[:=]\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^\s,}]+)"
)


class RedactSecretsFilter(logging.Filter):
    """Last line of defence: masks `key=value` secrets that slip into a log message."""

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = _SECRET_PATTERN.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
