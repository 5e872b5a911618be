"""What every control-plane command shares: an audit actor, workspace lookup, progress bars.

Not a command itself (Django skips modules whose name starts with an underscore).
"""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from audit.context import Actor, acting_as


def command_actor(name: str) -> Actor:
    return Actor("system", "", f"command:{name}")


class AuditedCommand(BaseCommand):
    """Runs `handle` as the actor `system` / `command:<name>`, so every write it makes is audited so."""

    @property
    def command_name(self) -> str:
        return self.__class__.__module__.rsplit(".", 1)[-1]

    def execute(self, *args, **options):
        with acting_as(command_actor(self.command_name)):
            return super().execute(*args, **options)

    def progress(self, *, total=None, desc=None, unit="it", options=None, **kwargs):
        """A tqdm bar on this command's stderr (silent with --verbosity 0)."""
        quiet = options is not None and options.get("verbosity", 1) == 0
        return tqdm(total=total, desc=desc, unit=unit, file=_raw(self.stderr), disable=quiet, leave=True,
                    dynamic_ncols=True, **kwargs)


def _raw(wrapper):
    # Django's OutputWrapper appends a newline to every write, which breaks tqdm's carriage returns.
    return getattr(wrapper, "_out", wrapper)


def get_workspace(slug):
    from workspaces.models import Workspace

    workspace = Workspace.objects.filter(slug=slug).first()
    if workspace is None:
        known = ", ".join(Workspace.objects.order_by("slug").values_list("slug", flat=True)[:20]) or "none yet"
        raise CommandError(f"No workspace with slug “{slug}” (known: {known}).")
    return workspace


def get_user(username):
    from django.contrib.auth import get_user_model

    User = get_user_model()
    try:
        return User.objects.get(**{User.USERNAME_FIELD: username})
    except User.DoesNotExist:
        raise CommandError(f"No user named “{username}”; create one with `manage.py createuser {username}`.")


def validation_message(exc) -> str:
    """A ValidationError as one readable line: `field: message; field: message`."""
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    if hasattr(exc, "messages"):
        return " ".join(exc.messages)
    return str(exc)
