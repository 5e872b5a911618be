"""Tenancy at the source: the one place that answers "which workspaces may this user act on?".

Views, admin and selectors start from ``Model.objects.for_user(user, perm)`` or
``.for_workspace(workspace)`` (see ``ScopedQuerySet``); nothing else lists objects.
"""

from guardian.shortcuts import get_objects_for_user

# Short permission names used across admin and API, mapped to Workspace permissions.
PERMISSIONS = {
    "view": "view_workspace",
    "change": "change_workspace",
    "identities": "manage_identities",
    "suppressions": "manage_suppressions",
    "delete_suppressions": "delete_suppressions",
    "messages": "manage_messages",
    "webhooks": "manage_webhooks",
    "api_keys": "manage_api_keys",
    "roles": "manage_roles",
    "pause": "pause_workspace",
    "audit": "view_audit",
    "export_audit": "export_audit",
}


def codename(perm: str) -> str:
    return PERMISSIONS.get(perm, perm)


def workspaces_for_user(user, perm="view"):
    from workspaces.models import Workspace

    if user is None or not user.is_authenticated or not user.is_active:
        return Workspace.objects.none()
    if user.is_superuser:
        return Workspace.objects.all()
    # accept_global_perms=False: a model-wide permission must never open every tenant.
    return get_objects_for_user(
        user, f"workspaces.{codename(perm)}", klass=Workspace, accept_global_perms=False,
        with_superuser=False,
    )


def user_can(user, perm, workspace) -> bool:
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    from guardian.core import ObjectPermissionChecker

    checker = getattr(user, "_workspace_perm_checker", None)
    if checker is None:
        checker = ObjectPermissionChecker(user)
        user._workspace_perm_checker = checker
    return checker.has_perm(codename(perm), workspace)


def user_can_anywhere(user, perm) -> bool:
    return workspaces_for_user(user, perm).exists()
