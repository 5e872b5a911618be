from django.core.management.base import CommandError

from workspaces import services
from workspaces.management.commands._common import AuditedCommand, get_workspace
from workspaces.models import WorkspaceAPIKey


class Command(AuditedCommand):
    help = "Creates an API key for a workspace and prints it as the last line of output (it is shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The workspace's slug.")
        parser.add_argument("name", help="What the key is for, e.g. “sequencer prod”.")
        parser.add_argument("--role", default="sequencer", choices=[r for r, _ in WorkspaceAPIKey.ROLE_CHOICES],
                            help="sequencer (default): send and suppress; reviewer: read and export audit; "
                                 "admin: everything in the workspace.")

    def handle(self, *args, **options):
        workspace = get_workspace(options["slug"])
        try:
            key, raw = services.create_api_key(workspace=workspace, name=options["name"], role=options["role"])
        except ValueError as exc:
            raise CommandError(str(exc))
        self.stdout.write(
            f"Created {key.role} key “{key.name}” ({key.prefix}) for workspace {workspace.slug}. "
            "Store it now: only its hash is kept. Use it as `Authorization: Api-Key <key>`:"
        )
        self.stdout.write(raw)
