from rest_framework import exceptions, permissions

from workspaces.api.auth import ApiKeyPrincipal

ALL_KEY_ROLES = {"sequencer", "reviewer", "admin"}


class KeyRolePermission(permissions.BasePermission):
    """A key's role decides what it may do: views declare `read_roles` and `write_roles`."""

    def has_permission(self, request, view):
        if not isinstance(request.user, ApiKeyPrincipal):
            raise exceptions.NotAuthenticated("Send `Authorization: Api-Key <key>`.")
        action = getattr(view, "action", None)
        by_action = getattr(view, "action_roles", {})
        if action in by_action:
            allowed = by_action[action]
        elif request.method in permissions.SAFE_METHODS:
            allowed = getattr(view, "read_roles", ALL_KEY_ROLES)
        else:
            allowed = getattr(view, "write_roles", {"admin"})
        if request.user.role not in allowed:
            raise exceptions.PermissionDenied(
                f"A {request.user.role} key may not do this; it needs one of: {', '.join(sorted(allowed))}."
            )
        return True
