"""A FastAPI dependency that yields the authenticated `Identity`.

    dance = DanceIdentity(HttpAuth(authenticator), RequestSettings(...))

    @app.post("/v1/reading")
    async def reading(identity: Annotated[Identity, Depends(dance)]) -> dict[str, str]:
        return {"client": identity.identity}

With `DanceMiddleware` installed the dependency returns the identity the middleware stored;
without it, the dependency authenticates the request itself (same rules: trusted proxies only,
claimed name from the header or the JSON body field, 403 with a stable code otherwise).
Needs the ``http`` extra (Starlette/FastAPI).
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.requests import Request

from dance.http.core import Denied, HttpAuth, RequestSettings, name_from_json_body
from dance.identity import Identity

__all__ = ["DanceIdentity"]


class DanceIdentity:
    """``Depends(DanceIdentity(...))``: the request's Identity, or HTTP 403 ``{"code": ...}``."""

    def __init__(self, http_auth: HttpAuth | None = None, settings: RequestSettings | None = None):
        self.http_auth = http_auth
        self.settings = settings or RequestSettings()

    async def __call__(self, request: Request) -> Identity:
        stored = request.scope.get("dance.identity")
        if isinstance(stored, Identity):
            return stored
        if self.http_auth is None:
            raise HTTPException(403, detail={"error": "forbidden", "code": "not-authenticated"})
        result = await self._authenticate(request, self.http_auth)
        if isinstance(result, Denied):
            raise HTTPException(result.status, detail={"error": "forbidden", "code": result.code})
        request.scope["dance.identity"] = result
        return result

    async def _authenticate(self, request: Request, http_auth: HttpAuth) -> Identity | Denied:
        settings = self.settings
        peer = request.client.host if request.client else None
        inputs = settings.inputs(http_auth, peer, request.headers.getlist)
        if isinstance(inputs, Denied):
            return inputs
        cert, chain, claimed = inputs
        if claimed is None and settings.name_field:
            content_type = request.headers.get("content-type", "").split(";", 1)[0].strip()
            if content_type.lower() == "application/json":
                length = request.headers.get("content-length", "")
                if not length.isdigit() or int(length) > settings.max_body:
                    return http_auth.refuse("bad-request", "body-too-large")
                claimed = name_from_json_body(await request.body(), settings.name_field)
        return await http_auth.authenticate(cert, chain, claimed)
