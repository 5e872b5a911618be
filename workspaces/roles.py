"""Workspace roles: each role is a named set of django-guardian object permissions on a Workspace.

A role also carries its marker permission (``role_<name>``) so the role a user holds can be
read back from the permissions alone. Granting and revoking are the only writers, and audit.
"""

from django.contrib.auth import get_user_model
from django.db import transaction
from guardian.shortcuts import assign_perm, get_perms, remove_perm

from audit import services as audit

ROLE_NAMES = ["owner", "admin", "operator", "reviewer", "viewer"]

_READ = {"view_workspace"}
_OPERATE = _READ | {
    "manage_identities", "manage_suppressions", "manage_messages", "manage_webhooks", "view_audit",
}
_ADMIN = _OPERATE | {
    "change_workspace", "delete_suppressions", "manage_api_keys", "pause_workspace", "export_audit",
}

ROLE_PERMISSIONS = {
    "owner": _ADMIN | {"manage_roles", "role_owner"},
    "admin": _ADMIN | {"role_admin"},
    "operator": _OPERATE | {"role_operator"},
    "reviewer": _READ | {"view_audit", "export_audit", "role_reviewer"},
    "viewer": _READ | {"role_viewer"},
}

ALL_ROLE_PERMISSIONS = set().union(*ROLE_PERMISSIONS.values())


class RoleError(ValueError):
    pass


def role_of(user, workspace):
    """The role `user` holds in `workspace`, or None."""
    perms = set(get_perms(user, workspace)) if not user.is_superuser else set()
    for name in ROLE_NAMES:
        if f"role_{name}" in perms:
            return name
    return None


def members(workspace):
    """[(user, role)] for every user holding a role in the workspace, by username."""
    from guardian.models import UserObjectPermission
    from django.contrib.contenttypes.models import ContentType

    rows = (
        UserObjectPermission.objects.filter(
            content_type=ContentType.objects.get_for_model(workspace),
            object_pk=str(workspace.pk),
            permission__codename__startswith="role_",
        )
        .select_related("user", "permission")
        .order_by("user__username")
    )
    return [(row.user, row.permission.codename.removeprefix("role_")) for row in rows]


@transaction.atomic
def grant_role(*, user, workspace, role):
    """Give `user` exactly `role` in `workspace` (replacing any role held before)."""
    if role not in ROLE_PERMISSIONS:
        raise RoleError(f"Unknown role “{role}”; choose one of {', '.join(ROLE_NAMES)}.")
    before = role_of(user, workspace)
    _clear(user, workspace)
    for codename in sorted(ROLE_PERMISSIONS[role]):
        assign_perm(f"workspaces.{codename}", user, workspace)
    audit.record(
        workspace=workspace,
        action="role.granted",
        obj=user,
        object_type="user",
        before={"user": user.get_username(), "role": before},
        after={"user": user.get_username(), "role": role},
    )
    return role


@transaction.atomic
def revoke_role(*, user, workspace):
    before = role_of(user, workspace)
    if before is None:
        raise RoleError(f"{user.get_username()} holds no role in {workspace.slug}.")
    _clear(user, workspace)
    audit.record(
        workspace=workspace,
        action="role.revoked",
        obj=user,
        object_type="user",
        before={"user": user.get_username(), "role": before},
        after={"user": user.get_username(), "role": None},
    )


def _clear(user, workspace):
    held = set(get_perms(user, workspace))
    for codename in held & ALL_ROLE_PERMISSIONS:
        remove_perm(f"workspaces.{codename}", user, workspace)


def user_model():
    return get_user_model()
