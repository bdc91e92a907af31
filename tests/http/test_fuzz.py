"""Fuzzing the OpenAPI schema with schemathesis, in-process (ASGI): positive
and negative inputs for every operation, signed in and not. No 5xx, ever,
and every error is ``{code, message}``. Bounded: 30 examples per operation
and mode
(8 in the default test profile).

(Driven through hypothesis directly: schemathesis' pytest plugin does not
yet run under pytest 9.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from session_ledger.api.app import create_app
from session_ledger.api.users.crypto import TokenBox
from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger.clock import SystemClock
from session_ledger.ledger.config import Settings
from session_ledger.ledger.db import make_engine
from tests.http.conftest import BASE_URL, PASSWORD, build_container, make_settings
from tests.support import profile

MAX_EXAMPLES = profile.pick(8, 30)


def errors_have_code_and_message(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict), body
        assert set(body) == {"code", "message"}, body
        assert isinstance(body["code"], str)
        assert isinstance(body["message"], str)
    return None


@pytest.fixture
def fuzz_app(pg_url: str) -> Iterator[FastAPI]:
    async def factory(settings: Settings) -> Any:
        return await build_container(settings.database_url, SystemClock())

    app = create_app(make_settings(pg_url), factory=factory)
    yield app
    # schemathesis runs the lifespan in its own loop; end it before the database goes.
    asgi.shutdown_lifespans()


def sign_up(app: FastAPI) -> dict[str, str]:
    with asgi.get_client(app) as client:  # type: ignore[arg-type]
        response = client.post(
            f"{BASE_URL}/api/auth/sign-up/email",
            json={"email": "fuzz@example.com", "password": PASSWORD},
        )
        assert response.status_code == 200, response.text
        return {k: v for k, v in response.cookies.items() if v is not None}


@pytest.mark.slow
@pytest.mark.parametrize("signed_in", [False, True], ids=["signed-out", "signed-in"])
def test_no_server_errors_and_every_error_is_code_and_message(
    fuzz_app: FastAPI, signed_in: bool
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    cookies = sign_up(fuzz_app) if signed_in else {}
    checks = [not_a_server_error, errors_have_code_and_message]
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                case.call_and_validate(headers={"origin": BASE_URL}, cookies=cookies, checks=checks)

            try:
                run()
            except Unsatisfiable:
                # Nothing to break: the operation takes no input at all.
                assert mode is GenerationMode.NEGATIVE


# ----------------------------------------------- hostile strings and ages
#
# schemathesis draws valid UTF-8 text and small values; these did not find
# the 500s of a lone surrogate in update-session or of an age that overflows
# a datetime (``since=99999999d``). Here every parameter and body field of
# every operation, signed in as an administrator, gets such values.

HOSTILE_EXAMPLES = 12
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
controls = st.characters(categories=["Cc"])
hostile_text = st.lists(
    st.one_of(surrogates, controls, st.characters(), st.sampled_from("/\\@:.%")), max_size=12
).map("".join)
ages = st.builds(
    "{}{}".format,
    st.one_of(st.integers(0, 10**40), st.integers(10**6, 10**12)),
    st.sampled_from(["s", "m", "h", "d", "w"]),
)
far_instants = st.builds(
    "{}T23:59:59{}".format,
    st.sampled_from(["0001-01-01", "9999-12-31", "1970-01-01"]),
    st.sampled_from(["+23:59", "-23:59", "Z", ""]),
)
numbers = st.one_of(st.integers(-(10**30), 10**30), st.floats(allow_nan=False))
hostile = st.one_of(hostile_text, ages, far_instants, numbers.map(str))
#: Parameters that take times get ages and far instants more often.
TIME_PARAMETERS = {"since", "until", "at"}
times = st.one_of(ages, far_instants, hostile)
json_values = st.recursive(
    st.one_of(hostile, numbers, st.booleans(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(hostile_text, inner, max_size=3)
    ),
    max_leaves=6,
)


def _body_fields(spec: dict[str, Any], schema: dict[str, Any] | None) -> list[str] | None:
    """The property names of a JSON body schema ([] for a free-form object)."""
    if schema is None:
        return None
    for option in schema.get("anyOf", []):
        if "$ref" in option:
            schema = option
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return list(schema.get("properties", {}))


async def _make_admin(url: str, user_id: str) -> None:
    engine = make_engine(url)
    try:
        await SqlUserStore(engine, TokenBox(None)).set_roles(user_id, ["admin"])
    finally:
        await engine.dispose()


def _url_quote(value: str) -> str:
    # A lone surrogate has no UTF-8 form: send the bytes it would have.
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _hostile_request(
    data: st.DataObject, spec: dict[str, Any], method: str, path: str, op: dict[str, Any]
) -> tuple[str, str, str | None]:
    """(method, url, JSON body) with hostile values in every parameter and field."""
    url = path
    query = []
    for parameter in op.get("parameters", []):
        name = parameter["name"]
        timely = name in TIME_PARAMETERS
        value = data.draw(times if timely else hostile)
        if parameter["in"] == "path":
            url = url.replace("{" + name + "}", _url_quote(value) or "x")
        elif timely or data.draw(st.booleans()):
            query.append(f"{name}={_url_quote(value)}")
    if query:
        url += "?" + "&".join(query)
    content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    fields = _body_fields(spec, content.get("schema"))
    if fields is None:
        return method, url, None
    names = fields + data.draw(st.lists(hostile_text, max_size=2))
    body = {n: data.draw(json_values) for n in names if data.draw(st.booleans())}
    return method, url, json.dumps(body)


@pytest.mark.slow
def test_hostile_strings_and_huge_ages_never_reach_a_server_error(
    fuzz_app: FastAPI, pg_url: str
) -> None:
    with asgi.get_client(fuzz_app) as client:  # type: ignore[arg-type]
        client.base_url = BASE_URL
        client.headers["origin"] = BASE_URL
        signed_up = client.post(
            "/api/auth/sign-up/email", json={"email": "root@example.com", "password": PASSWORD}
        )
        asyncio.run(_make_admin(pg_url, signed_up.json()["user"]["id"]))
        spec = client.get("/openapi.json").json()
        operations = [
            (method.upper(), path, op)
            for path, item in spec["paths"].items()
            for method, op in item.items()
        ]
        assert len(operations) >= 15

        for operation in operations:
            _fuzz_hostile(client, spec, operation)


def _fuzz_hostile(client: Any, spec: dict[str, Any], operation: tuple[str, str, Any]) -> None:
    @given(data=st.data())
    @settings(
        max_examples=HOSTILE_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(data: st.DataObject) -> None:
        client.cookies.clear()
        signed_in = client.post(
            "/api/auth/sign-in/email", json={"email": "root@example.com", "password": PASSWORD}
        )
        assert signed_in.status_code == 200, signed_in.text
        method, url, body = _hostile_request(data, spec, *operation)
        response = client.request(
            method, url, data=body, headers={"content-type": "application/json"}
        )
        assert response.status_code < 500, (method, url, body, response.text)
        if response.status_code >= 400:
            assert set(response.json()) == {"code", "message"}, response.text

    run()
