"""Adding many mailboxes at once from a CSV: every row checked first (`plan`), then all created or none (`create`).

Columns (a header row names them, in any order and case): ``address``, ``display_name``, ``provider``,
``daily_cap``, ``weekly_cap``, and optionally ``warmup_profile`` and ``pools`` (several pool names separated by
``;``). Providers, warm-up profiles and pools are named (or given by id) within the workspace.
"""

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction

from audit import services as audit
from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile
from providers.models import ProviderConnection

MAX_ROWS = 2000
REQUIRED = ("address", "provider", "daily_cap", "weekly_cap")
OPTIONAL = ("display_name", "warmup_profile", "pools")
ALIASES = {"display name": "display_name", "name": "display_name", "daily cap": "daily_cap",
           "weekly cap": "weekly_cap", "warm-up profile": "warmup_profile", "warmup profile": "warmup_profile",
           "warmup": "warmup_profile", "warm-up": "warmup_profile", "pool": "pools", "email": "address"}
POOL_SEPARATORS = re.compile(r"[;|]")


class InvalidFile(Exception):
    """The file as a whole cannot be read (no header, a missing column, too many rows)."""


@dataclass
class Row:
    line: int
    address: str = ""
    display_name: str = ""
    provider_text: str = ""
    daily_cap_text: str = ""
    weekly_cap_text: str = ""
    warmup_text: str = ""
    pools_text: str = ""
    provider: ProviderConnection | None = None
    domain: SendingDomain | None = None
    daily_cap: int | None = None
    weekly_cap: int | None = None
    warmup_profile: WarmupProfile | None = None
    pools: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.errors


@dataclass
class Plan:
    workspace: object
    rows: list

    @property
    def ok(self):
        return bool(self.rows) and all(row.ok for row in self.rows)

    @property
    def error_count(self):
        return sum(1 for row in self.rows if not row.ok)


def _header(names):
    columns = []
    for name in names:
        key = (name or "").strip().lower().replace("-", "_") if name else ""
        key = ALIASES.get((name or "").strip().lower(), key)
        columns.append(key)
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise InvalidFile(f"The header row lacks {', '.join(missing)}: the first row must name the columns "
                          f"({', '.join(REQUIRED + OPTIONAL)}).")
    return columns


def read_rows(text):
    """The file's rows as dicts keyed by column name, with their line numbers."""
    lines = list(io.StringIO(text.lstrip("\ufeff")))
    first = next((line for line in lines if line.strip()), "")
    delimiter = max(",;\t", key=first.count)  # the header row's separator: comma, semicolon or tab
    reader = csv.reader(lines, delimiter=delimiter)
    header = next((row for row in reader if any(value.strip() for value in row)), None)
    if header is None:
        raise InvalidFile("The file is empty: give a header row, then one row per mailbox.")
    columns = _header(header)
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        if len(rows) >= MAX_ROWS:
            raise InvalidFile(f"At most {MAX_ROWS} mailboxes at once; split the file.")
        rows.append((reader.line_num, {name: (values[i].strip() if i < len(values) else "")
                                       for i, name in enumerate(columns) if name}))
    if not rows:
        raise InvalidFile("The file has a header row but no mailbox rows.")
    return rows


def _by_name_or_id(objects):
    found = {}
    for obj in objects:
        found[obj.pk] = obj
        found.setdefault(obj.name.strip().lower(), obj)
    return found


def _whole_number(text, label, row):
    try:
        value = int(text)
    except ValueError:
        row.errors.append(f"{label} must be a whole number, not “{text}”." if text else f"{label} is missing.")
        return None
    if value < 0:
        row.errors.append(f"{label} must be 0 or more.")
        return None
    return value


def plan(*, workspace, text) -> Plan:
    """Checks every row against the workspace as it is now, in a fixed number of queries. Raises InvalidFile."""
    raw = read_rows(text)
    domains = {d.name: d for d in SendingDomain.objects.filter(workspace=workspace)}
    providers = _by_name_or_id(ProviderConnection.objects.filter(workspace=workspace).defer("credentials"))
    profiles = _by_name_or_id(WarmupProfile.objects.filter(workspace=workspace))
    pools = _by_name_or_id(Pool.objects.filter(workspace=workspace))
    addresses = [values.get("address", "").strip().lower() for _, values in raw]
    taken = set(Mailbox.objects.filter(workspace=workspace, address__in=addresses).values_list("address", flat=True))
    seen = {}
    rows = []
    for line, values in raw:
        row = Row(line=line, address=values.get("address", "").strip().lower(),
                  display_name=values.get("display_name", ""), provider_text=values.get("provider", ""),
                  daily_cap_text=values.get("daily_cap", ""), weekly_cap_text=values.get("weekly_cap", ""),
                  warmup_text=values.get("warmup_profile", ""), pools_text=values.get("pools", ""))
        _check_address(row, workspace, domains, taken, seen)
        if len(row.display_name) > 200:
            row.errors.append("The display name is longer than 200 characters.")
        row.provider = providers.get(row.provider_text.strip()) or providers.get(row.provider_text.strip().lower())
        if row.provider is None:
            names = ", ".join(sorted({p.name for p in providers.values()})) or "none yet: add one first"
            row.errors.append(f"No provider “{row.provider_text}” in {workspace} (providers: {names})."
                              if row.provider_text else "The provider is missing.")
        row.daily_cap = _whole_number(row.daily_cap_text, "The daily cap", row)
        row.weekly_cap = _whole_number(row.weekly_cap_text, "The weekly cap", row)
        if row.daily_cap is not None and row.weekly_cap is not None and row.weekly_cap < row.daily_cap:
            row.errors.append(f"The weekly cap ({row.weekly_cap}) must be at least the daily cap ({row.daily_cap}).")
        if row.warmup_text:
            row.warmup_profile = profiles.get(row.warmup_text) or profiles.get(row.warmup_text.lower())
            if row.warmup_profile is None:
                row.errors.append(f"No warm-up profile “{row.warmup_text}” in {workspace}.")
        for name in (n.strip() for n in POOL_SEPARATORS.split(row.pools_text) if n.strip()):
            pool = pools.get(name) or pools.get(name.lower())
            if pool is None:
                row.errors.append(f"No pool “{name}” in {workspace}.")
            elif pool not in row.pools:
                row.pools.append(pool)
        rows.append(row)
    return Plan(workspace=workspace, rows=rows)


def _check_address(row, workspace, domains, taken, seen):
    if not row.address:
        row.errors.append("The address is missing.")
        return
    try:
        validate_email(row.address)
    except ValidationError:
        row.errors.append(f"“{row.address}” is not an email address.")
        return
    row.domain = domains.get(row.address.rsplit("@", 1)[1])
    if row.domain is None:
        row.errors.append(f"{row.address.rsplit('@', 1)[1]} is not a sending domain of {workspace}; add the domain "
                          "first.")
    if row.address in taken:
        row.errors.append(f"{row.address} is already a mailbox of {workspace}.")
    if row.address in seen:
        row.errors.append(f"{row.address} is also on line {seen[row.address]}.")
    else:
        seen[row.address] = row.line


class Conflict(Exception):
    """The workspace changed between the check and the creation (e.g. the same address was added meanwhile)."""


def create(*, plan: Plan, today=None) -> list:
    """Creates every mailbox of a plan without errors, each audited as `mailbox.created`, in one transaction."""
    if not plan.ok:
        raise ValueError("Only a plan without errors can be applied.")
    today = today or dt.date.today()
    made = []
    try:
        with transaction.atomic():
            for row in plan.rows:
                mailbox = Mailbox.objects.create(
                    workspace=plan.workspace, domain=row.domain, provider=row.provider, address=row.address,
                    display_name=row.display_name, daily_cap=row.daily_cap, weekly_cap=row.weekly_cap,
                    warmup_profile=row.warmup_profile, warmup_started_on=today if row.warmup_profile else None)
                if row.pools:
                    mailbox.pools.set(row.pools)
                after = audit.snapshot(mailbox, exclude=("created_at", "updated_at"))
                after["pools"] = sorted(str(pool.pk) for pool in row.pools)
                audit.record(workspace=plan.workspace, action="mailbox.created", obj=mailbox, after=after)
                made.append(mailbox)
    except IntegrityError as error:
        raise Conflict("Another change added one of these mailboxes meanwhile; check the file again.") from error
    return made
