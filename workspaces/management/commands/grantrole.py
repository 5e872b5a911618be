from django.core.management.base import CommandError

from workspaces import roles
from workspaces.management.commands._common import AuditedCommand, get_user, get_workspace


class Command(AuditedCommand):
    help = "Gives a user exactly one role in a workspace (replacing any role held before)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("slug", help="The workspace's slug.")
        parser.add_argument("role", help=f"One of: {', '.join(roles.ROLE_NAMES)}.")

    def handle(self, *args, **options):
        user = get_user(options["username"])
        workspace = get_workspace(options["slug"])
        try:
            role = roles.grant_role(user=user, workspace=workspace, role=options["role"])
        except roles.RoleError as exc:
            raise CommandError(str(exc))
        self.stdout.write(f"{user.get_username()} is now {role} in {workspace.slug}.")
