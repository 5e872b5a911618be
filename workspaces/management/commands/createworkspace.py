from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from workspaces import services
from workspaces.management.commands._common import AuditedCommand, validation_message
from workspaces.models import Workspace


class Command(AuditedCommand):
    help = "Creates a workspace (tenant)."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="Short unique name, e.g. acme.")
        parser.add_argument("--name", required=True, help="Display name, e.g. “Acme Ltd”.")
        parser.add_argument("--timezone", default="UTC", help="IANA time zone, e.g. Europe/Paris (default UTC).")
        parser.add_argument("--postal-address", default="", help="Appended to cold mail with the opt-out line.")

    def handle(self, *args, **options):
        if Workspace.objects.filter(slug=options["slug"]).exists():
            raise CommandError(f"A workspace with slug “{options['slug']}” already exists.")
        try:
            workspace = services.create_workspace(
                slug=options["slug"], name=options["name"], timezone=options["timezone"],
                postal_address=options["postal_address"],
            )
        except ValidationError as exc:
            raise CommandError(f"Cannot create workspace “{options['slug']}”: {validation_message(exc)}")
        self.stdout.write(f"Created workspace {workspace.slug} ({workspace.pk}), time zone {workspace.timezone}.")
