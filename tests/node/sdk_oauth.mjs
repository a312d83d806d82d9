#!/usr/bin/env node
// The real TypeScript MCP SDK client logging in through an OAuth 2.1 authorization server
// from nothing but the MCP URL, for mcp-auth-gateway's end-to-end tests:
//
//   node tests/node/sdk_oauth.mjs --url http://127.0.0.1:PORT/mcp \
//        [--state FILE] [--client-metadata-url https://…/client.json] \
//        [--redirect-uri http://127.0.0.1:PORT/callback] [--username alice] [--password PW] \
//        [--message TEXT] [--timeout-ms 30000] [--list-tools] [--call NAME[=JSON]]... \
//        [--grant-types authorization_code,refresh_token] [--provider ID]
//
// The SDK gets the 401, discovers the protected resource and authorization server metadata,
// registers (dynamic registration, or a URL client_id with --client-metadata-url), and calls
// the provider's redirectToAuthorization. That handler plays the browser itself: it GETs the
// authorization URL with a cookie jar, submits the login form (password from --password or
// the SDK_OAUTH_PASSWORD environment variable), submits the consent form if one is shown,
// follows redirects to other servers (an upstream's authorization server the gateway
// connects the user to: its login and consent forms are answered the same way; steps
// `hop`), and reads `code`, `state` and `iss` from the final redirect's Location without
// following it.
// The SDK then exchanges the code (finishAuth), connects, and the script calls the `echo`
// tool of server-everything.
//
// With --state FILE the client information and tokens are read from and written to FILE
// (JSON), so a later run reuses them: it calls without logging in, and refreshes with the
// stored refresh token when the access token is refused.
//
// After `echo`: --list-tools lists the tools (`toolNames`), and each --call NAME[=JSON] calls
// one more tool with those arguments (default {}), in order. Their outcomes are reported in
// `calls` (result text, or the error with its JSON-RPC / HTTP code) and do not fail the run,
// so a refused call can be asserted. When the SDK answers a call with UnauthorizedError after
// it sent the user to authorize again (a step-up: a 403 `insufficient_scope` makes the SDK
// re-run its authorization with the challenge's scope), the script does what it does after
// the first login: it finishes the authorization with the code the browser part got, and
// retries that call once. (Holding a refresh token, SDK 1.32.2 refreshes instead of
// authorizing; the refresh cannot widen the scope and the call fails: see README.md.)
//
// --grant-types sets the grant types the client registers with (default
// authorization_code,refresh_token); with only authorization_code the authorization server
// issues no refresh token.
//
// --provider ID logs in through the upstream identity provider ID instead of a password: on
// the login page the browser part submits <form id="provider-ID"> (its hidden inputs, no
// username or password), then follows redirects (301/302/303/307/308, each as a GET, across
// origins: the identity provider is another loopback port) and submits the consent form
// (decision=approve) when a 200 page shows one, until it is redirected to the redirect URI;
// at most 20 requests after the provider form. The cookie jar is one per authorization, keyed
// by host name like a browser's (the port does not separate cookies), honouring Path and
// expiry. Each step in `browser` then also has `host` (host:port), and intermediate
// redirects have page `hop`.
//
// Prints exactly ONE line of JSON on stdout and exits 0 ({"ok":true,...}) or 1
// ({"ok":false,"error":...}). Diagnostics go to stderr. tests/mcp_sdk_oauth.rs and
// tests/mcp_sdk_stepup.rs run it.

import { readFileSync, writeFileSync, renameSync, existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

// stdout is reserved for the single result line.
for (const name of ['log', 'info', 'debug', 'warn']) {
    console[name] = (...a) => console.error(...a);
}

const TOOL = 'echo';

// ---------------------------------------------------------------------------
// Result output: exactly once.
let finished = false;
let phase = 'startup';
const report = {
    http: [], // every request the SDK made (MCP and OAuth endpoints)
    browser: [], // what the redirect handler did
    authorizations: 0, // redirectToAuthorization calls (= logins attempted)
    authorizationRequests: [], // each authorization URL's parameters, in order
    savedTokens: [] // each saveTokens: {scope, claimsScope, hasRefreshToken}
};

function emit(obj, code) {
    if (finished) return;
    finished = true;
    process.stdout.write(JSON.stringify(obj) + '\n', () => process.exit(code));
    setTimeout(() => process.exit(code), 2000).unref();
}

function errText(e) {
    if (!(e instanceof Error)) return String(e);
    const c = e.cause;
    if (c) return `${e.name}: ${e.message}: ${c instanceof Error ? (c.code ?? c.message) : String(c)}`;
    return `${e.name}: ${e.message}`;
}

function fail(err) {
    const out = { ok: false, phase, error: errText(err), ...report };
    if (err && typeof err === 'object' && err.code !== undefined) out.errorCode = err.code;
    emit(out, 1);
}

process.on('unhandledRejection', err => fail(err));
process.on('uncaughtException', err => fail(err));

// ---------------------------------------------------------------------------
// Arguments.
function parseArgs(argv) {
    const out = {
        timeoutMs: 30000,
        username: 'alice',
        password: process.env.SDK_OAUTH_PASSWORD,
        redirectUri: 'http://127.0.0.1:33418/callback',
        message: 'hello through the gateway',
        listTools: false,
        calls: [],
        grantTypes: ['authorization_code', 'refresh_token'],
        provider: undefined
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
            return argv[++i];
        };
        switch (a) {
            case '--url':
                out.url = next();
                break;
            case '--state':
                out.state = next();
                break;
            case '--client-metadata-url':
                out.clientMetadataUrl = next();
                break;
            case '--redirect-uri':
                out.redirectUri = next();
                break;
            case '--username':
                out.username = next();
                break;
            case '--password':
                out.password = next();
                break;
            case '--message':
                out.message = next();
                break;
            case '--timeout-ms':
                out.timeoutMs = Number(next());
                break;
            case '--grant-types':
                out.grantTypes = next().split(',').map(g => g.trim()).filter(Boolean);
                if (!out.grantTypes.length) throw new Error('--grant-types needs at least one grant type');
                break;
            case '--provider':
                out.provider = next();
                if (!out.provider) throw new Error('--provider needs an identity provider id');
                break;
            case '--list-tools':
                out.listTools = true;
                break;
            case '--call': {
                const spec = next();
                const eq = spec.indexOf('=');
                const name = eq < 0 ? spec : spec.slice(0, eq);
                const callArgs = eq < 0 ? {} : JSON.parse(spec.slice(eq + 1));
                if (!name) throw new Error(`--call needs a tool name: ${spec}`);
                if (callArgs === null || typeof callArgs !== 'object' || Array.isArray(callArgs)) {
                    throw new Error(`--call ${name}: the arguments must be a JSON object`);
                }
                out.calls.push({ name, arguments: callArgs });
                break;
            }
            default:
                throw new Error(`unknown argument: ${a}`);
        }
    }
    if (!out.url) throw new Error('--url is required');
    new URL(out.url);
    new URL(out.redirectUri);
    if (!Number.isFinite(out.timeoutMs) || out.timeoutMs <= 0) throw new Error('--timeout-ms must be a positive number');
    return out;
}

let args;
try {
    args = parseArgs(process.argv.slice(2));
} catch (e) {
    fail(e);
}

const t0 = Date.now();

// ---------------------------------------------------------------------------
// A fetch that records what the SDK sends: method, URL, status, and for form posts to the
// token endpoint the grant type.
function recordingFetch(input, init = {}) {
    const entry = {
        method: (init.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase(),
        url: String(input instanceof Request ? input.url : input),
        status: null
    };
    const body = init.body;
    if (body instanceof URLSearchParams) {
        entry.grantType = body.get('grant_type') ?? undefined;
        entry.resource = body.get('resource') ?? undefined;
    } else if (typeof body === 'string') {
        try {
            const json = JSON.parse(body);
            if (json && typeof json === 'object' && !Array.isArray(json) && json.method) {
                entry.rpc = json.method;
                if (typeof json.params?.name === 'string') entry.rpcName = json.params.name;
            }
        } catch {
            const form = new URLSearchParams(body);
            if (form.get('grant_type')) entry.grantType = form.get('grant_type');
        }
    }
    const headers = new Headers(init.headers ?? {});
    entry.authorization = headers.has('authorization');
    // Protocol 2026-07-28 routing headers, when the SDK sends them.
    if (headers.has('mcp-method')) entry.mcpMethod = headers.get('mcp-method');
    if (headers.has('mcp-name')) entry.mcpName = headers.get('mcp-name');
    if (headers.has('mcp-protocol-version')) entry.protocolVersion = headers.get('mcp-protocol-version');
    report.http.push(entry);
    return fetch(input, init).then(
        res => {
            entry.status = res.status;
            if (res.status === 401 || res.status === 403) entry.wwwAuthenticate = res.headers.get('www-authenticate');
            return res;
        },
        e => {
            entry.error = errText(e);
            throw e;
        }
    );
}

// ---------------------------------------------------------------------------
// The browser part: a cookie-keeping client that follows nothing by itself. Cookies are kept
// as a browser does: per host name (not port), name and path, sent to paths under their
// Path, dropped when expired (Max-Age <= 0 or Expires in the past). Secure is not looked at
// (everything is plain http on loopback).
class Browser {
    constructor() {
        this.cookies = new Map(); // `host\tpath\tname` -> {host, path, name, value}
    }

    cookieHeader(url) {
        const { hostname, pathname } = new URL(url);
        const pairs = [];
        for (const c of this.cookies.values()) {
            if (c.host !== hostname) continue;
            const under = pathname === c.path || (pathname.startsWith(c.path) && (c.path.endsWith('/') || pathname[c.path.length] === '/'));
            if (under) pairs.push(`${c.name}=${c.value}`);
        }
        return pairs.join('; ');
    }

    storeCookie(url, header) {
        const { hostname, pathname } = new URL(url);
        const [pair, ...attrs] = header.split(';');
        const eq = pair.indexOf('=');
        if (eq <= 0) return;
        const name = pair.slice(0, eq).trim();
        const value = pair.slice(eq + 1).trim();
        let path = pathname.lastIndexOf('/') > 0 ? pathname.slice(0, pathname.lastIndexOf('/')) : '/';
        let expired = false;
        for (const attr of attrs) {
            const i = attr.indexOf('=');
            const key = (i < 0 ? attr : attr.slice(0, i)).trim().toLowerCase();
            const val = i < 0 ? '' : attr.slice(i + 1).trim();
            if (key === 'path' && val.startsWith('/')) path = val;
            else if (key === 'max-age' && /^-?\d+$/.test(val)) expired = Number(val) <= 0;
            else if (key === 'expires' && !attrs.some(a => /^\s*max-age\s*=/i.test(a))) {
                const when = Date.parse(val);
                expired = Number.isFinite(when) && when <= Date.now();
            }
        }
        const key = `${hostname}\t${path}\t${name}`;
        if (expired) this.cookies.delete(key);
        else this.cookies.set(key, { host: hostname, path, name, value });
    }

    async request(method, url, body) {
        const headers = { Accept: 'text/html' };
        const cookie = this.cookieHeader(url);
        if (cookie) headers.Cookie = cookie;
        if (body !== undefined) headers['Content-Type'] = 'application/x-www-form-urlencoded';
        const res = await fetch(url, { method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(10000) });
        for (const setCookie of res.headers.getSetCookie()) this.storeCookie(url, setCookie);
        const text = await res.text();
        const step = { method, path: new URL(url).pathname, status: res.status };
        if (args.provider !== undefined) step.host = new URL(url).host;
        report.browser.push(step);
        return { status: res.status, location: res.headers.get('location'), text, url, step };
    }
}

function unescapeHtml(s) {
    return s
        .replace(/&quot;/g, '"')
        .replace(/&#39;/g, "'")
        .replace(/&lt;/g, '<')
        .replace(/&gt;/g, '>')
        .replace(/&amp;/g, '&');
}

function attributes(tag) {
    const attrs = {};
    const re = /([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
    let m;
    const inner = tag.replace(/^<\s*[a-zA-Z]+/, '').replace(/\/?>$/, '');
    while ((m = re.exec(inner)) !== null) {
        attrs[m[1].toLowerCase()] = unescapeHtml(m[2] ?? m[3] ?? m[4] ?? '');
    }
    return attrs;
}

// The form with this id: its action (resolved against the page URL), method and named inputs.
function findForm(page, id) {
    const forms = page.text.match(/<form\b[^>]*>[\s\S]*?<\/form>/gi) ?? [];
    for (const form of forms) {
        const open = attributes(form.match(/<form\b[^>]*>/i)[0]);
        if (open.id !== id) continue;
        const fields = {};
        for (const input of form.match(/<input\b[^>]*>/gi) ?? []) {
            const a = attributes(input);
            if (a.name) fields[a.name] = a.value ?? '';
        }
        return {
            action: new URL(open.action ?? '', page.url).href,
            method: (open.method ?? 'get').toUpperCase(),
            fields
        };
    }
    return null;
}

// A page's text for an error message.
function pageText(page) {
    return page.text
        .replace(/<(style|script)\b[\s\S]*?<\/\1>/gi, ' ')
        .replace(/<[^>]+>/g, ' ')
        .replace(/\s+/g, ' ')
        .slice(0, 500);
}

// Where a redirect goes (resolved against the page URL), or null when the page is none.
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
function redirectTarget(page) {
    if (!REDIRECTS.has(page.status) || !page.location) return null;
    return new URL(page.location, page.url);
}

function isRedirectUri(location) {
    const expected = new URL(args.redirectUri);
    return location.origin === expected.origin && location.pathname === expected.pathname;
}

// The parameters of the final redirect to the redirect URI (not followed: this client's
// callback only needs the query).
function redirectUriParams(location) {
    const params = Object.fromEntries(location.searchParams);
    if (params.error) throw new Error(`authorization error: ${params.error}: ${params.error_description ?? ''}`);
    return params;
}

const MAX_PROVIDER_STEPS = 20;

// From `page` on: follow redirects (any origin: an identity provider or an upstream's
// authorization server is another loopback host or port), submit login forms with the
// username and password and approve consent pages, until redirected to the redirect URI.
// `after` names what came before, for the error messages.
async function followToRedirectUri(browser, page, after) {
    let submitted = null; // the form just submitted: the same form again means it was refused
    for (let steps = 1; ; steps++) {
        const location = redirectTarget(page);
        if (location && isRedirectUri(location)) {
            page.step.page = 'redirect';
            return redirectUriParams(location);
        }
        if (steps >= MAX_PROVIDER_STEPS) {
            throw new Error(`not redirected to the redirect URI within ${MAX_PROVIDER_STEPS} requests after ${after} (last: ${page.status} at ${page.step.host ?? ''}${page.step.path})`);
        }
        if (location) {
            page.step.page = 'hop';
            submitted = null;
            page = await browser.request('GET', location.href);
            continue;
        }
        const login = page.status === 200 ? findForm(page, 'login') : null;
        if (login && submitted === 'login') {
            throw new Error(`the login was refused: ${page.status} at ${page.step.host ?? ''}${page.step.path}: ${pageText(page)}`);
        }
        if (login) {
            submitted = 'login';
            page.step.page = 'login';
            if (!args.password) throw new Error('a login form is shown but no password was given (--password or SDK_OAUTH_PASSWORD)');
            const form = new URLSearchParams({ ...login.fields, username: args.username, password: args.password });
            page = await browser.request(login.method, login.action, form.toString());
            continue;
        }
        const consent = page.status === 200 ? findForm(page, 'consent') : null;
        if (consent && submitted === 'consent') {
            throw new Error(`the consent was refused: ${page.status} at ${page.step.host ?? ''}${page.step.path}: ${pageText(page)}`);
        }
        if (consent) {
            submitted = 'consent';
            page.step.page = 'consent';
            const approve = new URLSearchParams({ ...consent.fields, decision: 'approve' });
            page = await browser.request(consent.method, consent.action, approve.toString());
            continue;
        }
        throw new Error(`the authorization stopped after ${after}: ${page.status} at ${page.step.host ?? ''}${page.step.path}: ${pageText(page)}`);
    }
}

// --provider: submit the provider's form on the login page, then on as above.
async function loginThroughProvider(browser, page) {
    const form = page.status === 200 ? findForm(page, `provider-${args.provider}`) : null;
    if (!form) {
        throw new Error(`no <form id="provider-${args.provider}"> on the login page: ${page.status} at ${page.step.host}${page.step.path}: ${pageText(page)}`);
    }
    page.step.page = 'login';
    page = await browser.request(form.method, form.action, new URLSearchParams(form.fields).toString());
    return followToRedirectUri(browser, page, 'the provider form');
}

// GET the authorization URL, log in, consent (and whatever comes after: a connection to an
// upstream's authorization server), and return the redirect's parameters.
async function playBrowser(authorizationUrl) {
    const browser = new Browser();
    const page = await browser.request('GET', authorizationUrl);
    if (args.provider !== undefined) return loginThroughProvider(browser, page);
    return followToRedirectUri(browser, page, 'the authorization URL');
}

// ---------------------------------------------------------------------------
// The OAuthClientProvider: client information and tokens in memory, and in --state FILE.
class Provider {
    constructor() {
        this.saved = args.state && existsSync(args.state) ? JSON.parse(readFileSync(args.state, 'utf8')) : {};
        this.verifier = undefined;
        this.expectedState = undefined;
        this.discovery = undefined;
        this.result = undefined; // {code, state, iss} from the browser part
        if (args.clientMetadataUrl) this.clientMetadataUrl = args.clientMetadataUrl;
    }

    persist() {
        if (!args.state) return;
        const tmp = `${args.state}.tmp`;
        writeFileSync(tmp, JSON.stringify(this.saved, null, 2), { mode: 0o600 });
        renameSync(tmp, args.state);
    }

    get redirectUrl() {
        return args.redirectUri;
    }

    get clientMetadata() {
        return {
            client_name: 'mcp-auth-gateway e2e (TypeScript SDK)',
            redirect_uris: [args.redirectUri],
            grant_types: args.grantTypes,
            response_types: ['code'],
            token_endpoint_auth_method: 'none'
        };
    }

    state() {
        this.expectedState = randomBytes(16).toString('hex');
        return this.expectedState;
    }

    clientInformation() {
        return this.saved.clientInformation;
    }

    saveClientInformation(info) {
        this.saved.clientInformation = info;
        this.persist();
    }

    tokens() {
        return this.saved.tokens;
    }

    saveTokens(tokens) {
        report.savedTokens.push({
            scope: tokens?.scope ?? null,
            claimsScope: jwtClaims(tokens?.access_token)?.scope ?? null,
            hasRefreshToken: Boolean(tokens?.refresh_token)
        });
        this.saved.tokens = tokens;
        this.persist();
    }

    saveCodeVerifier(verifier) {
        this.verifier = verifier;
    }

    codeVerifier() {
        if (!this.verifier) throw new Error('no PKCE code verifier saved');
        return this.verifier;
    }

    saveDiscoveryState(state) {
        this.discovery = state;
    }

    discoveryState() {
        return this.discovery;
    }

    invalidateCredentials(scope) {
        console.error(`[sdk_oauth] SDK invalidates credentials: ${scope}`);
        if (scope === 'all' || scope === 'client') delete this.saved.clientInformation;
        if (scope === 'all' || scope === 'tokens') delete this.saved.tokens;
        if (scope === 'all' || scope === 'verifier') this.verifier = undefined;
        if (scope === 'all' || scope === 'discovery') this.discovery = undefined;
        this.persist();
    }

    async redirectToAuthorization(authorizationUrl) {
        report.authorizations++;
        phase = 'browser';
        const url = new URL(authorizationUrl);
        report.authorizationRequest = Object.fromEntries(
            [...url.searchParams].filter(([k]) => !['state', 'code_challenge'].includes(k))
        );
        report.authorizationRequests.push(report.authorizationRequest);
        const params = await playBrowser(url.href);
        if (!params.code) throw new Error('the redirect carries no code');
        if (params.state !== this.expectedState) throw new Error(`state mismatch: ${params.state} != ${this.expectedState}`);
        // RFC 9207: the SDK (1.32.2) does not check `iss`; this client does.
        const issuer = this.discovery?.authorizationServerMetadata?.issuer;
        if (issuer && params.iss !== issuer) throw new Error(`iss ${params.iss} is not the issuer ${issuer}`);
        report.iss = params.iss ?? null;
        this.result = params;
        phase = 'authorize';
    }
}

function jwtClaims(token) {
    const parts = typeof token === 'string' ? token.split('.') : [];
    if (parts.length !== 3) return null;
    try {
        return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    } catch {
        return null;
    }
}

// One --call: its outcome, never thrown. An UnauthorizedError right after the SDK sent the
// user to authorize (a step-up) is finished as after the first login, and the call retried
// once.
async function callOnce(client, transport, provider, call) {
    const outcome = { name: call.name, finishedAuthorization: false };
    const attempt = async () => {
        const result = await client.callTool({ name: call.name, arguments: call.arguments });
        outcome.ok = !result.isError;
        outcome.isError = Boolean(result.isError);
        outcome.text = result.content?.find(c => c.type === 'text')?.text ?? null;
    };
    const authorizationsBefore = report.authorizations;
    try {
        try {
            await attempt();
        } catch (e) {
            if (!(e instanceof UnauthorizedError) || report.authorizations === authorizationsBefore || !provider.result) throw e;
            outcome.firstError = errText(e);
            phase = `finish-auth ${call.name}`;
            await transport.finishAuth(provider.result.code);
            outcome.finishedAuthorization = true;
            phase = `tools/call ${call.name} (retry)`;
            await attempt();
        }
    } catch (e) {
        outcome.ok = false;
        outcome.error = errText(e);
        if (e && typeof e === 'object' && e.code !== undefined) outcome.errorCode = e.code;
    }
    outcome.authorizations = report.authorizations - authorizationsBefore;
    return outcome;
}

// ---------------------------------------------------------------------------
async function run() {
    const url = new URL(args.url);
    const provider = new Provider();
    report.storedTokensAtStart = Boolean(provider.saved.tokens);
    const newTransport = () =>
        new StreamableHTTPClientTransport(url, {
            authProvider: provider,
            fetch: recordingFetch,
            reconnectionOptions: { initialReconnectionDelay: 1000, maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1, maxRetries: 0 }
        });
    const newClient = () => {
        const c = new Client({ name: 'mcp-auth-gateway-e2e-oauth', version: '0.0.0' }, { capabilities: {} });
        c.onerror = e => console.error(`[sdk_oauth] transport error during ${phase}: ${errText(e)}`);
        return c;
    };

    phase = 'connect';
    let client = newClient();
    let transport = newTransport();
    try {
        await client.connect(transport);
    } catch (e) {
        if (!(e instanceof UnauthorizedError) || !provider.result) throw e;
        // The SDK handed the authorization to us and we have the code: as an application
        // whose callback received it would, finish and connect again.
        phase = 'finish-auth';
        await transport.finishAuth(provider.result.code);
        phase = 'reconnect';
        await client.close().catch(() => {});
        client = newClient();
        transport = newTransport();
        await client.connect(transport);
    }
    const serverInfo = client.getServerVersion();

    phase = 'tools/call';
    const result = await client.callTool({ name: TOOL, arguments: { message: args.message } });
    const text = result.content?.find(c => c.type === 'text')?.text ?? null;
    if (result.isError) throw new Error(`${TOOL} returned isError: ${text}`);
    if (text !== `Echo: ${args.message}`) throw new Error(`unexpected ${TOOL} result: ${text}`);

    if (args.listTools) {
        phase = 'tools/list';
        const listed = await client.listTools();
        report.toolNames = listed.tools.map(t => t.name);
    }
    if (args.calls.length) report.calls = [];
    for (const call of args.calls) {
        phase = `tools/call ${call.name}`;
        report.calls.push(await callOnce(client, transport, provider, call));
    }

    phase = 'close';
    await transport.terminateSession().catch(() => {});
    await client.close();

    const tokens = provider.saved.tokens;
    const oauthRequests = report.http.filter(e => e.url.split('?')[0] !== url.href);
    return {
        ok: true,
        serverName: serverInfo?.name ?? null,
        toolResultText: text,
        clientId: provider.saved.clientInformation?.client_id ?? null,
        registrations: oauthRequests.filter(e => e.method === 'POST' && new URL(e.url).pathname.endsWith('/register')).length,
        tokenGrants: oauthRequests.filter(e => e.grantType).map(e => ({ grantType: e.grantType, status: e.status })),
        mcpUnauthorized: report.http.filter(e => e.url.split('?')[0] === url.href && e.status === 401).length,
        accessTokenClaims: jwtClaims(tokens?.access_token),
        hasRefreshToken: Boolean(tokens?.refresh_token),
        ...report,
        elapsedMs: Date.now() - t0
    };
}

if (!finished) {
    const timer = setTimeout(() => fail(new Error(`global timeout of ${args.timeoutMs} ms exceeded (phase: ${phase})`)), args.timeoutMs);
    run()
        .then(result => {
            clearTimeout(timer);
            emit(result, result.ok ? 0 : 1);
        })
        .catch(err => {
            clearTimeout(timer);
            fail(err);
        });
}
