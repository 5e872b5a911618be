import pytest


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """createuser and `make up` hash passwords; the production hasher's cost is not what these tests check."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
