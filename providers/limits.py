"""The sending limits providers document, as defaults and ceilings for mailbox caps.

Figures are the providers' published per-user or per-account limits; they are ceilings, not
recommendations (a cold mailbox sends far fewer). SES has no fixed figure: its limit is the
account's maximum send rate, which a connection may record in its `max_send_rate` setting.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    daily_cap: int | None = None
    hourly_cap: int | None = None
    per_minute_cap: int | None = None
    source: str = ""

    def as_dict(self) -> dict:
        return {k: v for k, v in (("daily_cap", self.daily_cap), ("hourly_cap", self.hourly_cap),
                                  ("per_minute_cap", self.per_minute_cap)) if v is not None}


PRESETS = {
    "google_workspace": Limits(daily_cap=2000, source="Google Workspace sending limits: 2,000 messages per user per day"),
    "microsoft_365": Limits(daily_cap=10000, per_minute_cap=30,
                            source="Exchange Online limits: 30 messages per minute, 10,000 recipients per day"),
}
SES_SOURCE = "Amazon SES sending quota: the account's maximum send rate ({rate:g} messages per second)"


def for_connection(connection) -> Limits | None:
    """The documented limits of a provider connection, or None when its kind documents none."""
    if connection is None:
        return None
    if connection.kind == "ses":
        rate = (connection.settings or {}).get("max_send_rate")
        if not rate:
            return None
        return Limits(per_minute_cap=int(float(rate) * 60), source=SES_SOURCE.format(rate=float(rate)))
    return PRESETS.get(connection.kind)


def defaults_for(connection, given: dict) -> dict:
    """Caps a new mailbox takes from its provider where the caller gave none: the per-minute and
    hourly limits (the daily default stays the conservative model default when it is lower)."""
    limits = for_connection(connection)
    if limits is None:
        return {}
    proposed = {}
    for name in ("hourly_cap", "per_minute_cap"):
        value = getattr(limits, name)
        if value is not None and given.get(name) is None:
            proposed[name] = value
    return proposed


def excess(mailbox) -> list[str]:
    """Sentences naming each cap of `mailbox` above its provider's documented limit."""
    limits = for_connection(mailbox.provider)
    if limits is None:
        return []
    found = []
    labels = {"daily_cap": "daily cap", "hourly_cap": "hourly cap", "per_minute_cap": "per-minute cap"}
    for name, limit in limits.as_dict().items():
        value = getattr(mailbox, name)
        if value is not None and value > limit:
            found.append(f"The {labels[name]} of {value:,} is above the provider's limit of {limit:,} "
                         f"({limits.source}).")
    return found
