from django.core.management.base import CommandError

from workspaces import roles
from workspaces.management.commands._common import AuditedCommand, get_user, get_workspace


class Command(AuditedCommand):
    help = "Removes a user's role in a workspace; they no longer see it."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("slug", help="The workspace's slug.")

    def handle(self, *args, **options):
        user = get_user(options["username"])
        workspace = get_workspace(options["slug"])
        before = roles.role_of(user, workspace)
        try:
            roles.revoke_role(user=user, workspace=workspace)
        except roles.RoleError as exc:
            raise CommandError(str(exc))
        self.stdout.write(f"{user.get_username()} is no longer {before} in {workspace.slug}.")
