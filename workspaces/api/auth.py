"""API keys: `Authorization: Api-Key <key>`, hashed at rest, one workspace each."""

from rest_framework import authentication, exceptions
from rest_framework_api_key.permissions import KeyParser

from audit import context
from workspaces.models import WorkspaceAPIKey


class ApiKeyPrincipal:
    """The `request.user` of an API-key request: it is the key, acting in one workspace."""

    is_authenticated = True
    is_active = True
    is_superuser = False
    is_staff = False
    is_anonymous = False

    def __init__(self, key: WorkspaceAPIKey):
        self.key = key
        self.workspace = key.workspace
        self.role = key.role
        self.pk = key.pk

    def get_username(self):
        return f"api-key:{self.key.prefix}"

    def __str__(self):
        return self.get_username()


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Api-Key"
    parser = KeyParser()

    def authenticate(self, request):
        raw = self.parser.get(request)
        if not raw:
            return None
        prefix = raw.partition(".")[0]
        key = WorkspaceAPIKey.objects.select_related("workspace").filter(prefix=prefix, revoked=False).first()
        if key is None or not key.is_valid(raw):
            raise exceptions.AuthenticationFailed("The API key is not valid.")
        if key.has_expired:
            raise exceptions.AuthenticationFailed("The API key has expired or was revoked.")
        context.set_actor(context.actor_for_api_key(key))
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request):
        return self.keyword
