"""Linking identity-provider accounts to users (admins only).

OAuth flows are out of scope: an application that ran one (or an operator)
records the resulting provider account here; with ``store_tokens`` its
tokens then appear in the session payload as ``accounts[provider]``.
The tokens are encrypted at rest by the user store.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from session_ledger.api.deps import require_admin
from session_ledger.api.errors import ApiError
from session_ledger.api.routes.common import AuthDep, errors, respond
from session_ledger.ledger.ports import ProviderAccount

accounts_router = APIRouter(prefix="/admin/users", dependencies=[Depends(require_admin)])

Token = Annotated[str | None, Field(max_length=8192)]


class LinkAccountBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providerId: Annotated[str, Field(min_length=1, max_length=64)]  # noqa: N815
    accountId: Annotated[str, Field(min_length=1, max_length=255)]  # noqa: N815
    accessToken: Token = None  # noqa: N815
    refreshToken: Token = None  # noqa: N815
    idToken: Token = None  # noqa: N815
    tokenType: Annotated[str | None, Field(max_length=64)] = None  # noqa: N815
    scope: Annotated[str | None, Field(max_length=2048)] = None
    #: Epoch seconds, as the spec's session structure shows it.
    expiresAt: Annotated[int | None, Field(ge=0)] = None  # noqa: N815


@accounts_router.post("/{user_id}/accounts", responses=errors(401, 403, 404))
async def link_account(
    request: Request, auth: AuthDep, user_id: str, body: LinkAccountBody
) -> JSONResponse:
    """Link (or update) a provider account of ``user_id``; answers ``{status: true}``."""
    users = auth.users
    if users is None:
        raise ApiError(404, "USER_STORE_DISABLED", "the built-in user store is not enabled")
    await users.link_account(
        user_id,
        ProviderAccount(
            provider_id=body.providerId,
            account_id=body.accountId,
            access_token=body.accessToken,
            refresh_token=body.refreshToken,
            id_token=body.idToken,
            token_type=body.tokenType,
            scope=body.scope,
            expires_at=body.expiresAt,
        ),
    )
    return respond(request, {"status": True})
