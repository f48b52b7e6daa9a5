"""The live server against its own OpenAPI schema, property-based (schemathesis on hypothesis): a real uvicorn
(``malle serve`` in a subprocess) on a real bank holding real photos, a bounded number of generated requests
per operation. Every answer must be documented (status code, content type, headers), match its schema, and
none may be a server error; the server must still be up, and have logged no internal error, afterwards."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from service_server import AUTH, Server, upload

EXAMPLES = 12  # generated requests per operation (19 operations): the whole run stays near a minute on 2 cores
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


@pytest.fixture(scope="module")
def live(tmp_path_factory, demo_photos):
    root = tmp_path_factory.mktemp("contract")
    server = Server(root / "bank", root / "cache", "--max-upload-mb", "2")
    for name, method in (("photos", "pdq"), ("0", "phash")):
        assert server.client.post("/v1/collections", json={"name": name, "method": method}).status_code == 201
        for photo in demo_photos[:4]:
            assert upload(server.client, f"/v1/collections/{name}/items", photo.read_bytes(), photo.name,
                          metadata='{"source": "demo"}').status_code == 201
    yield server
    assert server.alive()
    server.stop()
    assert server.internal_errors() == []


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_live_server_keeps_its_own_contract(live, mode):
    """Positive: requests the schema allows; negative: requests it forbids (which must be 4xx, never 5xx)."""
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def keeps_the_contract(case):
            case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=600)  # a first compare loads models

        keeps_the_contract()
    assert live.alive()
