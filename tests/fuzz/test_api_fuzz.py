"""Schemathesis against our own OpenAPI schema, in process: no 5xx, every answer matches the schema,
every error carries the contract's shape, and a body that breaks the schema is refused.

`FUZZ_EXAMPLES` sets the generated examples per operation (default 15; schemathesis's coverage phase
adds its boundary cases). Inputs are the same on every run unless `FUZZ_SEED` is set: to a number
for another fixed seed, or to `random` to explore new inputs each run. `FUZZ_PATHS` (a regex) limits
the run to some paths.
"""

import functools
import os
import socket
import zlib

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="API fuzzing needs the dev dependency schemathesis")

from hypothesis import HealthCheck, seed, settings  # noqa: E402  (schemathesis brings hypothesis)
from rest_framework.test import APIClient  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.parameters import ParameterLocation  # noqa: E402
from schemathesis.generation.meta import CoverageScenario  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance, negative_data_rejection, response_schema_conformance, status_code_conformance,
)

from controlplane.wsgi import application  # noqa: E402
from mailboxes.dns.dkim import generate_keypair  # noqa: E402
from scripts.servers import free_port  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
SEED = os.environ.get("FUZZ_SEED")

# The objects the seeded workspace holds, by the collection their ids belong to.
SEEDED = {}


def isolated(environ, start_response):
    """The control plane's WSGI app with each request in its own savepoint of the test's transaction,
    so a request that fails in the database leaves the next one a working connection, as in production."""
    from django.db import DatabaseError, transaction

    if not SEEDED:  # loading the schema, outside any test
        return application(environ, start_response)
    savepoint = transaction.savepoint()
    try:
        body = list(application(environ, start_response))
    finally:
        try:
            transaction.savepoint_commit(savepoint)
        except DatabaseError:
            transaction.savepoint_rollback(savepoint)
    return body


schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", isolated)
if os.environ.get("FUZZ_PATHS"):
    schema = schema.include(path_regex=os.environ["FUZZ_PATHS"])


@schema.hook
def map_path_parameters(context, path_parameters):
    """Three ids in four name a seeded object, so operations on real objects run, not only 404s."""
    if SEEDED and path_parameters and "id" in path_parameters:
        if zlib.crc32(str(path_parameters["id"]).encode()) % 4:
            collection = context.operation.path.split("/")[3]
            path_parameters["id"] = SEEDED.get(collection, path_parameters["id"])
    if SEEDED and path_parameters and "address" in path_parameters:
        if zlib.crc32(str(path_parameters["address"]).encode()) % 2:
            path_parameters["address"] = "lead@example.com"
    return path_parameters


def error_shape(ctx, response, case):
    """Every 4xx and 5xx answer is {"error": {"code": str, "message": str, "fields"?: object, ...}}."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except Exception:  # noqa: BLE001
        raise AssertionError(f"The {response.status_code} answer is not JSON: {response.content[:200]!r}")
    assert isinstance(body, dict) and set(body) == {"error"}, f"Not the error shape: {body!r}"[:500]
    error = body["error"]
    assert isinstance(error, dict), f"Not the error shape: {body!r}"[:500]
    assert isinstance(error.get("code"), str) and error["code"], f"No error code: {body!r}"[:500]
    assert isinstance(error.get("message"), str) and error["message"], f"No error message: {body!r}"[:500]
    if "fields" in error:
        assert isinstance(error["fields"], dict), f"`fields` is not an object: {body!r}"[:500]
    return None


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _values_at(body, pointer):
    """The body's values where a schema pointer such as `/properties/tags/items/type` applies."""
    parts = pointer.strip("/").split("/")[:-1]
    values, index = [body], 0
    while index < len(parts):
        if parts[index] == "properties" and index + 1 < len(parts):
            key = parts[index + 1]
            values = [v[key] for v in values if isinstance(v, dict) and key in v]
            index += 2
        elif parts[index] == "items":
            values = [item for v in values if isinstance(v, list) for item in v]
            index += 1
        else:
            return []
    return values


def _only_numbers_for_text(case):
    """DRF reads a JSON number sent for a text field as its digits (`"name": 7` is `"7"`), by design:
    such a body is not counted as invalid data accepted."""
    data = case.meta.phase.data
    if data.mutations:
        return all(m.keywords == ("type",) and _is_number(m.new_value) and isinstance(m.original_value, str)
                   for m in data.mutations)
    if getattr(data, "scenario", None) != CoverageScenario.INCORRECT_TYPE \
            or not (data.location or "").endswith("/type"):
        return False
    values = _values_at(case.body, data.location)
    return bool(values) and all(_is_number(v) for v in values)


def invalid_body_rejected(ctx, response, case):
    """A request body that breaks the schema is refused. Query strings are lenient by design: an empty
    or malformed `limit` or date filter is ignored, as in DRF."""
    meta = case.meta
    if meta is None or getattr(meta.phase.data, "parameter_location", None) != ParameterLocation.BODY:
        return None
    if _only_numbers_for_text(case):
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          error_shape, invalid_body_rejected]


@functools.cache
def _one_keypair(bits=2048):
    """Every new domain gets a DKIM key; one key made once spares each domain an RSA key generation."""
    return generate_keypair(bits)


@pytest.fixture
def seeded(db, workspace, monkeypatch, settings):
    """A workspace with a domain, provider, warm-up profile, mailbox, pool, suppression, message and webhook."""
    from controlplane import webhooks
    from mailboxes.dns import dkim
    from tests.api.helpers import create_identities
    from tests.conftest import api_client_for
    from workspaces import services

    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))]

    def resolve(host, port, *args, **kwargs):
        """Webhook targets resolve without a network: `*.example.com` is public, the rest unknown."""
        if str(host).endswith("example.com"):
            return public
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", resolve)
    monkeypatch.setattr(dkim, "generate_keypair", _one_keypair)
    settings.DNS_NAMESERVERS = [f"127.0.0.1:{free_port()}"]  # `check?wait=true` asks loopback, where nobody answers
    settings.DNS_QUERY_TIMEOUT = 0.05
    api = api_client_for(workspace, "admin")
    ids = create_identities(api)
    message = api.post("/api/v1/messages", {"to": "lead@example.com", "subject": "Hi", "text": "Body"}, format="json")
    assert message.status_code == 202, message.json()
    hook = api.post("/api/v1/webhooks", {"url": "https://hooks.example.com/in"}, format="json")
    assert hook.status_code == 201, hook.json()
    _, raw = services.create_api_key(workspace=workspace, name="fuzz", role="admin")
    return {"key": raw, "domains": ids["domain"], "providers": ids["provider"], "mailboxes": ids["mailbox"],
            "pools": ids["pool"], "warmup-profiles": ids["warmup"], "suppressions": ids["suppression"],
            "messages": message.json()["id"], "webhooks": hook.json()["id"]}


@pytest.fixture(autouse=True)
def _in_process(seeded):
    """Requests run in the test's own transaction, as with Django's test client."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    SEEDED.update({k: v for k, v in seeded.items() if k != "key"})
    yield
    SEEDED.clear()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _seeded(test):
    return seed(int(SEED))(test) if SEED and SEED != "random" else test


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not SEED,
          suppress_health_check=list(HealthCheck), print_blob=True)
@_seeded
def test_api_keeps_its_schema_and_error_shape(case, seeded):
    case.call_and_validate(headers={"Authorization": f"Api-Key {seeded['key']}"}, checks=CHECKS)


def _operations():
    for path, methods in schema.raw_schema["paths"].items():
        for method, operation in methods.items():
            if method in ("get", "post", "patch", "put", "delete"):
                yield path, method, operation


def test_every_operation_refuses_strangers_and_weaker_roles_in_the_error_shape(seeded, make_api, workspace):
    """Without a key every operation answers 401; with a reviewer key, writes answer 403. Both in the
    contract's shape and among the statuses the schema documents."""
    anonymous, reviewer = APIClient(), make_api(workspace, "reviewer")
    for path, method, operation in _operations():
        url = path.replace("{id}", SEEDED["mailboxes"]).replace("{address}", "lead@example.com") \
            .replace("{delivery_id}", "whd_unknown")
        documented = set(operation["responses"])
        stranger = getattr(anonymous, method)(url, {}, format="json")
        assert stranger.status_code == 401 and "401" in documented, (method, path, stranger.status_code)
        assert stranger.json()["error"]["code"] == "not_authenticated"
        answer = getattr(reviewer, method)(url, {}, format="json") if method != "get" else reviewer.get(url)
        assert str(answer.status_code) in documented, (method, path, answer.status_code, answer.content[:200])
        if answer.status_code >= 400:
            error = answer.json()["error"]
            assert error["code"] and error["message"], (method, path, error)
        if method != "get" and answer.status_code == 403:
            assert answer.json()["error"]["code"] == "permission_denied"
