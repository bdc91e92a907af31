"""Fuzzing the OpenAPI schema with schemathesis, in-process (ASGI): positive
and negative inputs for every operation, signed in and not. No 5xx, ever,
and every error is ``{code, message}``. Bounded: 30 examples per operation
and mode
(8 in the default test profile).

(Driven through hypothesis directly: schemathesis' pytest plugin does not
yet run under pytest 9.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from api.app import create_app
from ledger.clock import SystemClock
from ledger.config import Settings
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
