import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import transaction

from audit import services as audit
from workspaces.management.commands._common import AuditedCommand, validation_message


class Command(AuditedCommand):
    help = ("Creates a staff user without superuser rights: they can sign in to the admin and see "
            "only the workspaces a role grants them (see grantrole).")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--password", default=None,
                            help="Initial password; without it a random one is generated and printed.")

    def handle(self, *args, **options):
        User = get_user_model()
        username = options["username"]
        generated = options["password"] is None
        password = secrets.token_urlsafe(15) if generated else options["password"]
        user = User(**{User.USERNAME_FIELD: username}, email=options["email"], is_staff=True, is_superuser=False)
        try:
            user.full_clean(exclude=["password"])
            validate_password(password, user)
        except ValidationError as exc:
            raise CommandError(f"Cannot create user “{username}”: {validation_message(exc)}")
        user.set_password(password)
        with transaction.atomic():
            user.save()
            audit.record(workspace=None, action="user.created", obj=user, object_type="user",
                         after={"username": user.get_username(), "email": user.email, "is_staff": True,
                                "is_superuser": False})
        self.stdout.write(f"Created staff user {username}. Grant a role with: manage.py grantrole {username} SLUG ROLE")
        if generated:
            self.stdout.write(f"Password: {password}")
