#!/usr/bin/env python3
"""The real Python MCP SDK client logging in through an OAuth 2.1 authorization server from
nothing but the MCP URL, for mcp-auth-gateway's end-to-end tests.

    python3 tests/python/sdk_oauth.py --url http://127.0.0.1:PORT/mcp \
        [--state FILE] [--client-metadata-url https://HOST/client.json] \
        [--redirect-uri http://127.0.0.1:PORT/callback] [--username alice] \
        [--password PW] [--message TEXT] [--timeout 30] [--list-tools] \
        [--call NAME[=JSON]]... [--grant-types authorization_code,refresh_token] \
        [--mode auto|legacy|2026-07-28] [--provider ID]

The SDK's OAuthClientProvider gets the 401, discovers the protected resource and
authorization server metadata, registers (dynamic client registration) or, with
--client-metadata-url, uses that https URL as its client_id (a Client ID Metadata Document:
the SDK's `client_metadata_url`, used when the authorization server advertises
`client_id_metadata_document_supported`; the authorization server fetches the document, the
SDK does not), and calls the redirect handler. That handler plays the browser itself: it GETs
the authorization URL with a cookie-keeping HTTP client, submits the login form (password
from --password or the SDK_OAUTH_PASSWORD environment variable), submits the consent form if
one is shown, follows redirects to other servers (an upstream's authorization server the
gateway connects the user to: its login and consent forms are answered the same way; steps
`hop`), and reads `code`, `state` and `iss` from the final redirect's Location without
following it; the callback handler hands them to the SDK, which exchanges the code. The
script then calls the `echo` tool of server-everything.

With --state FILE the client information and tokens are kept in FILE (JSON) through the SDK's
TokenStorage protocol, so a later run reuses them. The file also keeps the access token's
absolute expiry (`access_token_expires_at`), which this client restores when it starts: the
SDK (2.3.0) reloads stored tokens but not their expiry, so it would never refresh a stored
token on its own (python-sdk issue #3250). An expired stored token is refreshed with the
stored refresh token before the first request.

After `echo`: --list-tools lists the tools (`toolNames`), and each --call NAME[=JSON] calls one
more tool with those arguments (default {}), in order. Their outcomes are reported in `calls`
(result text, or the error with its JSON-RPC code) and do not fail the run, so a refused call
can be asserted. A step-up (403 `insufficient_scope`) is the SDK's own business: it
authorizes again inside its httpx auth flow (through the same redirect and callback
handlers) and retries the request. --grant-types sets the grant types the client registers
with; --mode is the SDK's `Client(mode=...)` (default `auto`: probe `server/discover`, fall
back to `initialize`).

--provider ID logs in through the upstream identity provider ID instead of a password: on the
login page the browser part submits <form id="provider-ID"> (its hidden inputs, no username
or password), then follows redirects (301/302/303/307/308, each as a GET, across origins: the
identity provider is another loopback port) and submits the consent form (decision=approve)
when a 200 page shows one, until it is redirected to the redirect URI; at most 20 requests
after the provider form. The browser's cookie jar (httpx's, one per authorization) is keyed
by host name like a browser's: the port does not separate cookies. Each step in `browser`
then also has `host` (host:port), and intermediate redirects have page `hop`.

Prints exactly ONE line of JSON on stdout and exits 0 ({"ok": true, ...}) or 1
({"ok": false, "error": ...}). Diagnostics go to stderr. See README.md next to this file;
tests/mcp_sdk_oauth.rs and tests/mcp_sdk_stepup.rs run it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import re
import sys
import time
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlparse

TOOL = "echo"

# stdout is reserved for the single result line.
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="[sdk_oauth.py] %(levelname)s %(name)s: %(message)s")

state_of_run: dict[str, Any] = {
    "phase": "startup",
    "http": [],  # every request the SDK made (MCP and OAuth endpoints)
    "browser": [],  # what the redirect handler did
    "authorizations": 0,  # redirect handler calls (= logins attempted)
    "authorizationRequests": [],  # each authorization URL's parameters, in order
    "savedTokens": [],  # each set_tokens: {scope, claimsScope, hasRefreshToken}
}


def emit(obj: dict[str, Any], code: int) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    sys.exit(code)


def err_text(e: BaseException) -> str:
    """The exception and, for exception groups (anyio task groups), every leaf."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(err_text(inner) for inner in e.exceptions)
    text = f"{type(e).__name__}: {e}"
    if e.__cause__ is not None:
        text += f" (caused by {err_text(e.__cause__)})"
    return text


def fail(e: BaseException | str) -> None:
    message = e if isinstance(e, str) else err_text(e)
    out = {"ok": False, "error": message, **state_of_run}
    emit(out, 1)


try:
    import httpx2
    from mcp import Client
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
    from mcp.shared.exceptions import MCPError
except ImportError as e:  # pragma: no cover - reported as a result line
    fail(f"the Python MCP SDK is not installed ({e}); see tests/python/README.md")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--state")
    parser.add_argument("--client-metadata-url", help="an https URL to use as client_id (CIMD) instead of registering")
    parser.add_argument("--redirect-uri", default="http://127.0.0.1:33418/callback")
    parser.add_argument("--username", default="alice")
    parser.add_argument("--password", default=os.environ.get("SDK_OAUTH_PASSWORD"))
    parser.add_argument("--message", default="hello through the gateway")
    parser.add_argument("--timeout", type=float, default=30.0, help="global timeout in seconds")
    parser.add_argument("--list-tools", action="store_true", help="list the tools after calling echo")
    parser.add_argument(
        "--call", action="append", default=[], metavar="NAME[=JSON]", help="call one more tool after echo (repeatable)"
    )
    parser.add_argument("--grant-types", default="authorization_code,refresh_token", help="grant types to register with")
    parser.add_argument("--mode", default="auto", help="the SDK's Client(mode=...): auto, legacy or a protocol version")
    parser.add_argument("--provider", metavar="ID", help="log in through this upstream identity provider instead of a password")
    args = parser.parse_args()
    calls = []
    for spec in args.call:
        name, _, text = spec.partition("=")
        if not name:
            parser.error(f"--call needs a tool name: {spec}")
        try:
            arguments = json.loads(text) if text else {}
        except ValueError as e:
            parser.error(f"--call {name}: the arguments are not JSON ({e})")
        if not isinstance(arguments, dict):
            parser.error(f"--call {name}: the arguments must be a JSON object")
        calls.append((name, arguments))
    args.call = calls
    args.grant_types = [g.strip() for g in args.grant_types.split(",") if g.strip()]
    if not args.grant_types:
        parser.error("--grant-types needs at least one grant type")
    if urlparse(args.url).scheme not in ("http", "https"):
        parser.error("--url must be an http(s) URL")
    if args.provider is not None and not args.provider:
        parser.error("--provider needs an identity provider id")
    return args


# ---------------------------------------------------------------------------
# Token storage: the SDK's TokenStorage protocol, in memory and in --state FILE.
class FileTokenStorage:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.data = json.load(f)

    def _persist(self) -> None:
        if not self.path:
            return
        tmp = f"{self.path}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=2)
        os.replace(tmp, self.path)

    async def get_tokens(self) -> OAuthToken | None:
        tokens = self.data.get("tokens")
        return OAuthToken.model_validate(tokens) if tokens else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        state_of_run["savedTokens"].append(
            {
                "scope": tokens.scope,
                "claimsScope": (jwt_claims(tokens.access_token) or {}).get("scope"),
                "hasRefreshToken": bool(tokens.refresh_token),
            }
        )
        self.data["tokens"] = tokens.model_dump(mode="json", exclude_none=True)
        if tokens.expires_in is not None:
            self.data["access_token_expires_at"] = time.time() + int(tokens.expires_in)
        else:
            self.data.pop("access_token_expires_at", None)
        self._persist()

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        info = self.data.get("client_info")
        return OAuthClientInformationFull.model_validate(info) if info else None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.data["client_info"] = client_info.model_dump(mode="json", exclude_none=True)
        self._persist()

    def access_token_expires_at(self) -> float | None:
        value = self.data.get("access_token_expires_at")
        return float(value) if value is not None else None


class StoredExpiryOAuthClientProvider(OAuthClientProvider):
    """The SDK's provider, plus restoring the stored token's expiry when it loads the tokens
    (the SDK keeps only `expires_in`, relative to a moment it does not store)."""

    def __init__(self, storage: FileTokenStorage, **kwargs: Any) -> None:
        super().__init__(storage=storage, **kwargs)
        self.file_storage = storage

    async def _initialize(self) -> None:
        await super()._initialize()
        if self.context.current_tokens is not None:
            self.context.token_expiry_time = self.file_storage.access_token_expires_at()


# ---------------------------------------------------------------------------
# The browser part.
class FormParser(HTMLParser):
    """Every <form> of a page: id, action, method and its named inputs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.current = {"id": a.get("id"), "action": a.get("action", ""), "method": a.get("method", "get").upper(), "fields": {}}
            self.forms.append(self.current)
        elif tag == "input" and self.current is not None and a.get("name"):
            self.current["fields"][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.current = None


def find_form(page: httpx2.Response, form_id: str) -> dict[str, Any] | None:
    parser = FormParser()
    parser.feed(page.text)
    for form in parser.forms:
        if form["id"] == form_id:
            form["action"] = urljoin(str(page.url), form["action"])
            return form
    return None


REDIRECTS = (301, 302, 303, 307, 308)
MAX_PROVIDER_STEPS = 20


def page_text(page: httpx2.Response) -> str:
    """A page's visible text for an error message."""
    text = re.sub(r"<(style|script)\b.*?</\1>", " ", page.text, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", text)
    return re.sub(r"\s+", " ", text).strip()[:500]


def where(page: httpx2.Response) -> str:
    """host:port and path of the URL a page came from."""
    url = urlparse(str(page.url))
    return f"{url.netloc}{url.path}"


class BrowserPart:
    """The redirect handler (plays the browser) and the callback handler (hands the SDK what
    came back on the redirect)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.result: AuthorizationCodeResult | None = None

    async def _step(self, client: httpx2.AsyncClient, method: str, url: str, form: dict[str, str] | None = None) -> httpx2.Response:
        response = await client.request(method, url, data=form, headers={"Accept": "text/html"})
        step = {"method": method, "path": urlparse(url).path, "status": response.status_code}
        if self.args.provider is not None:
            step["host"] = urlparse(url).netloc
        state_of_run["browser"].append(step)
        return response

    def _is_redirect_uri(self, location: str) -> bool:
        got, expected = urlparse(location), urlparse(self.args.redirect_uri)
        return (got.scheme, got.netloc, got.path) == (expected.scheme, expected.netloc, expected.path)

    @staticmethod
    def _redirect_uri_params(location: str) -> dict[str, str]:
        """The final redirect's parameters (not followed: the callback only needs the query)."""
        params = dict(parse_qsl(urlparse(location).query))
        if "error" in params:
            raise RuntimeError(f"authorization error: {params['error']}: {params.get('error_description', '')}")
        return params

    async def _follow_to_redirect_uri(self, browser: httpx2.AsyncClient, page: httpx2.Response, after: str) -> dict[str, str]:
        """From `page` on: follow redirects (any origin: an identity provider or an upstream's
        authorization server is another loopback host or port), submit login forms with the
        username and password and approve consent pages, until redirected to the redirect URI."""
        submitted: str | None = None  # the form just submitted: the same form again means it was refused
        steps = 1
        while True:
            location = page.headers.get("location") if page.status_code in REDIRECTS else None
            location = urljoin(str(page.url), location) if location else None
            if location and self._is_redirect_uri(location):
                state_of_run["browser"][-1]["page"] = "redirect"
                return self._redirect_uri_params(location)
            if steps >= MAX_PROVIDER_STEPS:
                raise RuntimeError(
                    f"not redirected to the redirect URI within {MAX_PROVIDER_STEPS} requests after {after} "
                    f"(last: {page.status_code} at {where(page)})"
                )
            steps += 1
            if location:
                state_of_run["browser"][-1]["page"] = "hop"
                submitted = None
                page = await self._step(browser, "GET", location)
                continue
            login = find_form(page, "login") if page.status_code == 200 else None
            if login and submitted == "login":
                raise RuntimeError(f"the login was refused: {page.status_code} at {where(page)}: {page_text(page)}")
            if login:
                submitted = "login"
                state_of_run["browser"][-1]["page"] = "login"
                if not self.args.password:
                    raise RuntimeError("a login form is shown but no password was given (--password or SDK_OAUTH_PASSWORD)")
                fields = {**login["fields"], "username": self.args.username, "password": self.args.password}
                page = await self._step(browser, login["method"], login["action"], fields)
                continue
            consent = find_form(page, "consent") if page.status_code == 200 else None
            if consent and submitted == "consent":
                raise RuntimeError(f"the consent was refused: {page.status_code} at {where(page)}: {page_text(page)}")
            if consent:
                submitted = "consent"
                state_of_run["browser"][-1]["page"] = "consent"
                page = await self._step(browser, consent["method"], consent["action"], {**consent["fields"], "decision": "approve"})
                continue
            raise RuntimeError(f"the authorization stopped after {after}: {page.status_code} at {where(page)}: {page_text(page)}")

    async def _through_provider(self, browser: httpx2.AsyncClient, page: httpx2.Response) -> dict[str, str]:
        """--provider: submit the provider's form on the login page, then on as above."""
        form_id = f"provider-{self.args.provider}"
        form = find_form(page, form_id) if page.status_code == 200 else None
        if form is None:
            raise RuntimeError(f'no <form id="{form_id}"> on the login page: {page.status_code} at {where(page)}: {page_text(page)}')
        state_of_run["browser"][-1]["page"] = "login"
        page = await self._step(browser, form["method"], form["action"], form["fields"])
        return await self._follow_to_redirect_uri(browser, page, "the provider form")

    async def redirect_handler(self, authorization_url: str) -> None:
        state_of_run["authorizations"] += 1
        state_of_run["phase"] = "browser"
        query = dict(parse_qsl(urlparse(authorization_url).query))
        state_of_run["authorizationRequest"] = {k: v for k, v in query.items() if k not in ("state", "code_challenge")}
        state_of_run["authorizationRequests"].append(state_of_run["authorizationRequest"])
        # A fresh cookie jar, redirects not followed: every step is looked at.
        async with httpx2.AsyncClient(follow_redirects=False, timeout=10.0) as browser:
            page = await self._step(browser, "GET", authorization_url)
            if self.args.provider is not None:
                self._finish(await self._through_provider(browser, page))
            else:
                self._finish(await self._follow_to_redirect_uri(browser, page, "the authorization URL"))

    def _finish(self, params: dict[str, str]) -> None:
        state_of_run["iss"] = params.get("iss")
        self.result = AuthorizationCodeResult(code=params.get("code", ""), state=params.get("state"), iss=params.get("iss"))
        state_of_run["phase"] = "authorize"

    async def callback_handler(self) -> AuthorizationCodeResult:
        if self.result is None:
            raise RuntimeError("the callback was awaited before the redirect handler got a code")
        result, self.result = self.result, None
        return result


# ---------------------------------------------------------------------------
def jwt_claims(token: str | None) -> dict[str, Any] | None:
    parts = token.split(".") if token else []
    if len(parts) != 3:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None


async def record_request(request: httpx2.Request) -> None:
    entry: dict[str, Any] = {"method": request.method, "url": str(request.url.copy_with(query=None)), "status": None}
    content_type = request.headers.get("content-type", "")
    try:
        body = request.content
    except Exception:  # a streaming body: nothing to read here
        body = b""
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = dict(parse_qsl(body.decode()))
        if "grant_type" in form:
            entry["grantType"] = form["grant_type"]
            entry["resource"] = form.get("resource")
    elif content_type.startswith("application/json"):
        try:
            message = json.loads(body)
            if isinstance(message, dict) and "method" in message:
                entry["rpc"] = message["method"]
                params = message.get("params")
                if isinstance(params, dict) and isinstance(params.get("name"), str):
                    entry["rpcName"] = params["name"]
        except ValueError:
            pass
    entry["authorization"] = "authorization" in request.headers
    # Protocol 2026-07-28 routing headers, when the SDK sends them.
    for header, key in (("mcp-method", "mcpMethod"), ("mcp-name", "mcpName"), ("mcp-protocol-version", "protocolVersion")):
        if header in request.headers:
            entry[key] = request.headers[header]
    request.extensions["e2e_entry"] = entry
    state_of_run["http"].append(entry)


async def record_response(response: httpx2.Response) -> None:
    entry = response.request.extensions.get("e2e_entry")
    if entry is not None:
        entry["status"] = response.status_code
        if response.status_code in (401, 403):
            entry["wwwAuthenticate"] = response.headers.get("www-authenticate")
        if response.status_code >= 400 and "text/event-stream" not in response.headers.get("content-type", ""):
            # Who refused: the gateway's and the upstream's error bodies differ.
            entry["errorBody"] = (await response.aread()).decode("utf-8", "replace")[:300]


async def call_once(client: Any, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One --call: its outcome, never raised (a step-up happens inside the SDK's auth flow)."""
    outcome: dict[str, Any] = {"name": name}
    authorizations_before = state_of_run["authorizations"]
    try:
        result = await client.call_tool(name, arguments)
        texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
        outcome.update(ok=not result.is_error, isError=bool(result.is_error), text=texts[0] if texts else None)
    except MCPError as e:
        outcome.update(ok=False, error=err_text(e), errorCode=e.code, errorMessage=e.message)
    except Exception as e:  # noqa: BLE001 - reported, asserted by the caller
        outcome.update(ok=False, error=err_text(e))
    outcome["authorizations"] = state_of_run["authorizations"] - authorizations_before
    return outcome


async def run(args: argparse.Namespace) -> dict[str, Any]:
    storage = FileTokenStorage(args.state)
    state_of_run["storedTokensAtStart"] = "tokens" in storage.data
    browser = BrowserPart(args)
    provider = StoredExpiryOAuthClientProvider(
        storage,
        server_url=args.url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-auth-gateway e2e (Python SDK)",
            redirect_uris=[args.redirect_uri],
            grant_types=args.grant_types,
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
        client_metadata_url=args.client_metadata_url,
    )
    http_client = httpx2.AsyncClient(
        auth=provider,
        timeout=httpx2.Timeout(30.0, read=300.0),
        event_hooks={"request": [record_request], "response": [record_response]},
    )
    state_of_run["phase"] = "connect"
    async with http_client:
        async with Client(streamable_http_client(args.url, http_client=http_client), mode=args.mode) as client:
            server_info = client.server_info
            state_of_run["phase"] = "tools/call"
            result = await client.call_tool(TOOL, {"message": args.message})
            texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
            text = texts[0] if texts else None
            if result.is_error:
                raise RuntimeError(f"{TOOL} returned isError: {text}")
            if text != f"Echo: {args.message}":
                raise RuntimeError(f"unexpected {TOOL} result: {text}")
            if args.list_tools:
                state_of_run["phase"] = "tools/list"
                listed = await client.list_tools()
                state_of_run["toolNames"] = [t.name for t in listed.tools]
            if args.call:
                state_of_run["calls"] = []
            for name, arguments in args.call:
                state_of_run["phase"] = f"tools/call {name}"
                state_of_run["calls"].append(await call_once(client, name, arguments))
            state_of_run["phase"] = "close"

    mcp_url = args.url.split("?")[0]
    oauth = [e for e in state_of_run["http"] if e["url"] != mcp_url]
    tokens = storage.data.get("tokens") or {}
    client_info = storage.data.get("client_info") or {}
    return {
        "ok": True,
        "serverName": server_info.name if server_info else None,
        "toolResultText": text,
        "clientId": client_info.get("client_id"),
        "registrations": sum(1 for e in oauth if e["method"] == "POST" and urlparse(e["url"]).path.endswith("/register")),
        "tokenGrants": [{"grantType": e["grantType"], "status": e["status"]} for e in oauth if e.get("grantType")],
        "mcpUnauthorized": sum(1 for e in state_of_run["http"] if e["url"] == mcp_url and e["status"] == 401),
        "accessTokenClaims": jwt_claims(tokens.get("access_token")),
        "hasRefreshToken": bool(tokens.get("refresh_token")),
        **state_of_run,
    }


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    try:
        result = asyncio.run(asyncio.wait_for(run(args), timeout=args.timeout))
    except (asyncio.TimeoutError, TimeoutError):
        fail(f"global timeout of {args.timeout} s exceeded (phase: {state_of_run['phase']})")
    except BaseException as e:  # noqa: BLE001 - every failure becomes the result line
        if isinstance(e, SystemExit):
            raise
        fail(e)
    result["elapsedMs"] = int((time.monotonic() - started) * 1000)
    emit(result, 0)


if __name__ == "__main__":
    main()
