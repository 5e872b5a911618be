"""The admin tests' two workspaces and users of every role, for the suppression admin's tests."""

from tests.admin.conftest import acme, globex, login, users  # noqa: F401 - fixtures
