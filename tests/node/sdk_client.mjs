#!/usr/bin/env node
// Drives the real TypeScript MCP SDK client (Client + StreamableHTTPClientTransport)
// against an MCP endpoint, for mcp-auth-gateway's end-to-end tests.
//
//   node tests/node/sdk_client.mjs --url http://127.0.0.1:PORT/mcp [--token TOKEN] \
//        --scenario full|unauthorized [--timeout-ms 30000]
//
// Prints exactly ONE line of JSON on stdout and exits 0 ({"ok":true,...}) or
// 1 ({"ok":false,"error":...}). Everything else (diagnostics) goes to stderr.
// See README.md next to this file.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
    discoverOAuthProtectedResourceMetadata,
    extractResourceMetadataUrl,
    extractWWWAuthenticateParams,
    selectResourceURL
} from '@modelcontextprotocol/sdk/client/auth.js';
import {
    LATEST_PROTOCOL_VERSION,
    LoggingMessageNotificationSchema,
    ResourceUpdatedNotificationSchema
} from '@modelcontextprotocol/sdk/types.js';

// ---------------------------------------------------------------------------
// stdout is reserved for the single result line.
for (const name of ['log', 'info', 'debug', 'warn']) {
    console[name] = (...args) => console.error(...args);
}

// server-everything facts (see README.md)
const PROGRESS_TOOL = 'trigger-long-running-operation';
const PROGRESS_DURATION_S = 2; // total seconds the tool runs
const PROGRESS_STEPS = 4; // one notifications/progress per step => 4, every 0.5 s
const SUBSCRIBE_TOOL = 'toggle-subscriber-updates';
const SUBSCRIBE_URI = 'demo://resource/dynamic/text/1';

// ---------------------------------------------------------------------------
// Result output: exactly once.
let finished = false;
let phase = 'startup';
// Filled by the scenarios so that a failure report still shows what happened on the wire.
const diag = { log: null, transportErrors: null };

function emit(obj, code) {
    if (finished) return;
    finished = true;
    const line = JSON.stringify(obj) + '\n';
    process.stdout.write(line, () => process.exit(code));
    // Safety net in case the write callback never fires.
    setTimeout(() => process.exit(code), 2000).unref();
}

function fail(err, extra = {}) {
    const message = errText(err);
    const out = { ok: false, scenario: args?.scenario, phase, error: message, ...extra };
    if (err && typeof err === 'object' && 'code' in err && err.code !== undefined) out.errorCode = err.code;
    try {
        if (diag.transportErrors?.length) out.transportErrors = diag.transportErrors;
        if (diag.log) out.http = summarizeLog(diag.log);
    } catch {
        /* diagnostics are best effort */
    }
    emit(out, 1);
}

process.on('unhandledRejection', err => fail(err));
process.on('uncaughtException', err => fail(err));

// ---------------------------------------------------------------------------
// Arguments.
function parseArgs(argv) {
    const out = { timeoutMs: 30000 };
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
            case '--token':
                out.token = next();
                break;
            case '--scenario':
                out.scenario = next();
                break;
            case '--timeout-ms':
                out.timeoutMs = Number(next());
                break;
            default:
                throw new Error(`unknown argument: ${a}`);
        }
    }
    if (!out.url) throw new Error('--url is required');
    new URL(out.url); // validate
    if (out.scenario !== 'full' && out.scenario !== 'unauthorized') {
        throw new Error('--scenario must be "full" or "unauthorized"');
    }
    if (!Number.isFinite(out.timeoutMs) || out.timeoutMs <= 0) throw new Error('--timeout-ms must be a positive number');
    return out;
}

let args;
try {
    args = parseArgs(process.argv.slice(2));
} catch (e) {
    fail(e);
}

// ---------------------------------------------------------------------------
// Helpers.
const t0 = Date.now();
const elapsed = () => Date.now() - t0;

function mediaType(ct) {
    return (ct ?? '').split(';')[0].trim().toLowerCase();
}

function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise,
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
        })
    ]).finally(() => clearTimeout(timer));
}

function deferred() {
    let resolve;
    const promise = new Promise(r => (resolve = r));
    return { promise, resolve };
}

function errText(e) {
    if (!(e instanceof Error)) return String(e);
    // undici's "fetch failed" hides the useful part (ECONNREFUSED, ...) in `cause`.
    const c = e.cause;
    if (c) return `${e.message}: ${c instanceof Error ? c.code ?? c.message : String(c)}${c?.code && c.message ? ` (${c.message})` : ''}`;
    return e.message;
}

// Parses an RFC 9110 challenge list value: `Bearer k="v", k2=v2`. Only the first
// challenge is returned; enough for a single Bearer challenge.
function parseChallenge(value) {
    if (!value) return null;
    const m = /^\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*(.*)$/s.exec(value);
    if (!m) return null;
    const scheme = m[1];
    const params = {};
    const re = /\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)/gy;
    const rest = m[2];
    re.lastIndex = 0;
    let p;
    while (re.lastIndex < rest.length && (p = re.exec(rest)) !== null) {
        params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
        if (p[0].length === 0) break;
    }
    return { scheme, params };
}

// A pass-through TransformStream over an SSE body that counts the JSON-RPC messages
// it carries (by method, or "response"/"error"), comment lines (keep-alives) and
// whether the stream ended cleanly. Bytes are forwarded unchanged to the SDK.
function sseTap(entry, onMessage) {
    const decoder = new TextDecoder();
    let buf = '';
    let data = [];
    // `chunks` counts the body reads; `order` notes, per JSON-RPC message, the read it was
    // completed in. A message completed in an earlier read than another one arrived before
    // it on the wire - an ordering fact that needs no clock.
    entry.sse = { messages: {}, events: 0, comments: 0, chunks: 0, order: [], ended: false };
    const dispatch = () => {
        if (data.length === 0) return;
        const text = data.join('\n');
        data = [];
        entry.sse.events++;
        if (text.trim() === '') return; // priming event
        let kind = 'unparseable';
        try {
            const msg = JSON.parse(text);
            kind = msg.method ?? (msg.error ? 'error' : 'response');
        } catch {
            /* keep "unparseable" */
        }
        entry.sse.messages[kind] = (entry.sse.messages[kind] ?? 0) + 1;
        entry.sse.order.push({ kind, chunk: entry.sse.chunks });
        onMessage?.(kind);
    };
    const handleLine = line => {
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') return dispatch();
        if (line.startsWith(':')) {
            entry.sse.comments++;
            return;
        }
        if (line.startsWith('data:')) {
            let v = line.slice(5);
            if (v.startsWith(' ')) v = v.slice(1);
            data.push(v);
        }
    };
    return new TransformStream({
        transform(chunk, controller) {
            entry.sse.chunks++;
            controller.enqueue(chunk);
            buf += decoder.decode(chunk, { stream: true });
            let idx;
            while ((idx = buf.indexOf('\n')) >= 0) {
                handleLine(buf.slice(0, idx));
                buf = buf.slice(idx + 1);
            }
        },
        flush() {
            buf += decoder.decode();
            if (buf) handleLine(buf);
            dispatch();
            entry.sse.ended = true;
            entry.sse.endedAtMs = elapsed();
            entry.onEnd?.();
        }
    });
}

// A fetch that records every request the SDK makes (method, JSON-RPC method, status,
// content type, whether Authorization was sent) and taps SSE bodies.
function makeRecordingFetch(log, hooks = {}) {
    return async (input, init = {}) => {
        const method = (init.method ?? 'GET').toUpperCase();
        const headers = new Headers(init.headers ?? {});
        const entry = {
            method,
            url: String(input instanceof Request ? input.url : input),
            rpc: undefined,
            authorization: headers.has('authorization'),
            status: null,
            contentType: null,
            atMs: elapsed()
        };
        if (typeof init.body === 'string') {
            try {
                const b = JSON.parse(init.body);
                const one = m => m.method ?? (m.id !== undefined ? 'response' : undefined);
                entry.rpc = Array.isArray(b) ? b.map(one) : one(b);
            } catch {
                /* not JSON */
            }
        }
        log.push(entry);
        let res;
        try {
            res = await fetch(input, init);
        } catch (e) {
            entry.error = errText(e);
            hooks.onResponse?.(entry, null);
            throw e;
        }
        entry.status = res.status;
        entry.contentType = res.headers.get('content-type');
        entry.sessionIdHeader = res.headers.get('mcp-session-id');
        if (res.status === 401 || res.status === 403) entry.wwwAuthenticate = res.headers.get('www-authenticate');
        if (res.ok && res.body && mediaType(entry.contentType) === 'text/event-stream') {
            const body = res.body.pipeThrough(sseTap(entry, kind => hooks.onSseMessage?.(entry, kind)));
            res = new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
        }
        hooks.onResponse?.(entry, res);
        return res;
    };
}

function summarizeLog(log) {
    return log.map(e => {
        const o = { method: e.method, status: e.status };
        if (e.rpc !== undefined) o.rpc = e.rpc;
        if (e.contentType) o.contentType = e.contentType;
        if (e.wwwAuthenticate) o.wwwAuthenticate = e.wwwAuthenticate;
        o.authorization = e.authorization;
        if (e.sse) o.sse = e.sse;
        if (e.error) o.error = e.error;
        return o;
    });
}

// ---------------------------------------------------------------------------
// Scenario: full
async function scenarioFull() {
    const url = new URL(args.url);
    const log = [];
    const transportErrors = [];
    diag.log = log;
    diag.transportErrors = transportErrors;
    const getOpened = deferred();
    const getEnded = deferred();
    let getEntry = null;

    const recordingFetch = makeRecordingFetch(log, {
        onResponse(entry) {
            if (entry.method === 'GET' && !getEntry) {
                getEntry = entry;
                entry.onEnd = () => getEnded.resolve();
                getOpened.resolve(entry);
            }
        }
    });

    const requestInit = args.token ? { headers: { Authorization: `Bearer ${args.token}` } } : undefined;
    const transport = new StreamableHTTPClientTransport(url, {
        requestInit,
        fetch: recordingFetch,
        // No silent reconnects: a dropped stream must surface as an error.
        reconnectionOptions: {
            initialReconnectionDelay: 1000,
            maxReconnectionDelay: 1000,
            reconnectionDelayGrowFactor: 1,
            maxRetries: 0
        }
    });
    const client = new Client({ name: 'mcp-auth-gateway-e2e', version: '0.0.0' }, { capabilities: {} });
    client.onerror = e => {
        transportErrors.push({ phase, error: errText(e) });
        console.error(`[sdk_client] transport error during ${phase}: ${errText(e)}`);
    };

    // Server -> client notifications that are not tied to a request (standalone GET stream).
    let resourceUpdated = 0;
    let loggingMessages = 0;
    const firstResourceUpdated = deferred();
    client.setNotificationHandler(ResourceUpdatedNotificationSchema, () => {
        resourceUpdated++;
        firstResourceUpdated.resolve();
    });
    client.setNotificationHandler(LoggingMessageNotificationSchema, () => {
        loggingMessages++;
    });

    phase = 'initialize';
    await client.connect(transport);
    const serverInfo = client.getServerVersion();
    const protocolVersion = transport.protocolVersion;
    const sessionId = transport.sessionId;
    if (!sessionId) throw new Error('server did not assign an Mcp-Session-Id');

    phase = 'get-stream-open';
    // The SDK opens the standalone GET SSE stream (not awaited by connect()) once
    // notifications/initialized got its 202.
    const g = await withTimeout(getOpened.promise, 5000, 'the SDK to open the standalone GET SSE stream');
    if (g.error) throw new Error(`GET SSE stream request failed: ${g.error}`);
    if (g.status !== 200 || mediaType(g.contentType) !== 'text/event-stream') {
        throw new Error(`GET SSE stream not established: status ${g.status}, content-type ${g.contentType}`);
    }

    phase = 'tools/list';
    const { tools } = await client.listTools();
    if (!tools.some(t => t.name === PROGRESS_TOOL)) throw new Error(`server does not list ${PROGRESS_TOOL}`);

    phase = 'tools/call-progress';
    const progressArrivalMs = [];
    const callStart = Date.now();
    const result = await client.callTool(
        { name: PROGRESS_TOOL, arguments: { duration: PROGRESS_DURATION_S, steps: PROGRESS_STEPS } },
        undefined,
        { onprogress: () => progressArrivalMs.push(Date.now() - callStart) }
    );
    const callDurationMs = Date.now() - callStart;
    const progressNotifications = progressArrivalMs.length;
    const resultText = result.content?.find(c => c.type === 'text')?.text ?? null;
    if (result.isError) throw new Error(`${PROGRESS_TOOL} returned isError: ${resultText}`);
    if (progressNotifications !== PROGRESS_STEPS) {
        throw new Error(`expected ${PROGRESS_STEPS} progress notifications, got ${progressNotifications}`);
    }
    // Streaming check, by ordering rather than by wall clock: the server sends a progress
    // notification every duration/steps seconds and the result only at the end. If the POST's
    // SSE response was streamed, the first progress notification is completed in an earlier
    // body read than the result. An intermediary that buffered the response until it ended
    // would deliver them together, in the same read.
    const callEntry = log.find(e => e.method === 'POST' && e.rpc === 'tools/call');
    const callOrder = callEntry?.sse?.order ?? [];
    const progressOnPostStream = callOrder.filter(m => m.kind === 'notifications/progress').length;
    const firstProgressChunk = callOrder.find(m => m.kind === 'notifications/progress')?.chunk ?? null;
    const resultChunk = callOrder.find(m => m.kind === 'response')?.chunk ?? null;
    const progressStreamedIncrementally =
        firstProgressChunk !== null && resultChunk !== null && firstProgressChunk < resultChunk;
    if (!progressStreamedIncrementally) {
        throw new Error(
            `progress notifications were not streamed incrementally (first progress in body read ${firstProgressChunk}, ` +
                `result in body read ${resultChunk}; arrivals at ${progressArrivalMs.join(',')} ms) - response buffered?`
        );
    }

    phase = 'get-stream-notification';
    // resources/subscribe + toggle-subscriber-updates make server-everything emit
    // notifications/resources/updated with no related request => standalone GET stream.
    await client.subscribeResource({ uri: SUBSCRIBE_URI });
    const toggleOn = await client.callTool({ name: SUBSCRIBE_TOOL, arguments: {} });
    if (toggleOn.isError) throw new Error(`${SUBSCRIBE_TOOL} failed`);
    await withTimeout(firstResourceUpdated.promise, 8000, 'notifications/resources/updated on the GET stream');
    await client.callTool({ name: SUBSCRIBE_TOOL, arguments: {} }); // toggle off again
    const getMessages = { ...(getEntry.sse?.messages ?? {}) };
    const resourceUpdatedOnGetStream = getMessages['notifications/resources/updated'] ?? 0;
    if (resourceUpdatedOnGetStream < 1) {
        throw new Error('notifications/resources/updated did not arrive over the GET stream');
    }
    if (transportErrors.length) {
        throw new Error(`transport errors before termination: ${transportErrors.map(e => e.error).join('; ')}`);
    }

    phase = 'terminate';
    await transport.terminateSession();
    const deleteEntry = [...log].reverse().find(e => e.method === 'DELETE');
    const deleteStatus = deleteEntry?.status ?? null;
    // After DELETE the server closes the standalone stream; observe it (report only).
    let getStreamEndedAfterDelete = false;
    try {
        await withTimeout(getEnded.promise, 2000, 'GET stream end');
        getStreamEndedAfterDelete = true;
    } catch {
        /* reported as false */
    }
    phase = 'close';
    await client.close();

    return {
        ok: true,
        scenario: 'full',
        serverName: serverInfo?.name ?? null,
        serverVersion: serverInfo?.version ?? null,
        protocolVersion,
        sessionId,
        toolCount: tools.length,
        progressTool: PROGRESS_TOOL,
        progressArgs: { duration: PROGRESS_DURATION_S, steps: PROGRESS_STEPS },
        progressNotifications,
        progressOnPostStream,
        progressArrivalMs,
        progressStreamedIncrementally,
        progressBodyReads: { firstProgress: firstProgressChunk, result: resultChunk },
        callDurationMs,
        toolResultText: resultText,
        getStream: {
            status: g.status,
            contentType: g.contentType,
            authorization: g.authorization,
            messages: getMessages,
            endedAfterDelete: getStreamEndedAfterDelete
        },
        getStreamNotifications: {
            resourceUpdated: resourceUpdatedOnGetStream,
            resourceUpdatedHandled: resourceUpdated,
            logging: loggingMessages
        },
        deleteStatus,
        // With --token: every POST/GET/DELETE the SDK made carried it. Without: null.
        authorizationSentOnAll: args.token ? log.every(e => e.authorization) : null,
        transportErrorsAfterTerminate: transportErrors.map(e => e.error),
        http: summarizeLog(log),
        elapsedMs: elapsed()
    };
}

// ---------------------------------------------------------------------------
// Scenario: unauthorized
async function scenarioUnauthorized() {
    const url = new URL(args.url);
    const authHeaders = args.token ? { Authorization: `Bearer ${args.token}` } : {};
    const out = { ok: false, scenario: 'unauthorized', tokenSent: Boolean(args.token) };
    const problems = [];

    // 1. Raw POST initialize.
    phase = 'raw-initialize';
    const initBody = {
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: {
            protocolVersion: LATEST_PROTOCOL_VERSION,
            capabilities: {},
            clientInfo: { name: 'mcp-auth-gateway-e2e-raw', version: '0.0.0' }
        }
    };
    const res = await fetch(url, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', ...authHeaders },
        body: JSON.stringify(initBody),
        signal: AbortSignal.timeout(10000)
    });
    out.status = res.status;
    out.wwwAuthenticate = res.headers.get('www-authenticate');
    out.contentType = res.headers.get('content-type');
    const bodyText = await res.text();
    out.body = bodyText.length > 1000 ? bodyText.slice(0, 1000) + '...' : bodyText;
    const challenge = parseChallenge(out.wwwAuthenticate);
    out.challenge = challenge;
    const sdkParams = extractWWWAuthenticateParams(res);
    out.sdkWwwAuthenticateParams = {
        resourceMetadataUrl: sdkParams.resourceMetadataUrl?.href ?? null,
        scope: sdkParams.scope ?? null,
        error: sdkParams.error ?? null
    };
    const sdkRmUrl = extractResourceMetadataUrl(res);
    out.resourceMetadataUrl = challenge?.params?.resource_metadata ?? null;
    out.sdkResourceMetadataUrl = sdkRmUrl?.href ?? null;

    if (res.status !== 401) problems.push(`expected 401, got ${res.status}`);
    if (!out.wwwAuthenticate) problems.push('no WWW-Authenticate header');
    else if (challenge?.scheme?.toLowerCase() !== 'bearer') problems.push(`challenge scheme is not Bearer: ${out.wwwAuthenticate}`);
    if (!out.resourceMetadataUrl) problems.push('no resource_metadata in WWW-Authenticate');
    if (!sdkRmUrl) problems.push('SDK extractResourceMetadataUrl found no resource_metadata URL');

    // 2. Fetch the metadata document named by the challenge.
    if (out.resourceMetadataUrl) {
        phase = 'metadata';
        try {
            const mres = await fetch(out.resourceMetadataUrl, {
                redirect: 'manual',
                headers: { Accept: 'application/json' },
                signal: AbortSignal.timeout(10000)
            });
            out.metadataStatus = mres.status;
            out.metadataContentType = mres.headers.get('content-type');
            const mtext = await mres.text();
            try {
                out.metadata = JSON.parse(mtext);
            } catch {
                out.metadata = null;
                out.metadataBody = mtext.slice(0, 1000);
                problems.push('metadata document is not JSON');
            }
            if (mres.status !== 200) problems.push(`metadata status ${mres.status}`);
        } catch (e) {
            out.metadataError = errText(e);
            problems.push(`metadata fetch failed: ${errText(e)}`);
        }
    }

    // 3. The SDK's own discovery helpers.
    phase = 'sdk-discovery';
    out.sdkDiscovered = {};
    const discoveryLog = [];
    const discoveryFetch = makeRecordingFetch(discoveryLog);
    if (sdkRmUrl) {
        try {
            // This is exactly what auth() does after a 401: follow resource_metadata.
            const md = await discoverOAuthProtectedResourceMetadata(url, { resourceMetadataUrl: sdkRmUrl }, discoveryFetch);
            out.sdkDiscovered.viaChallenge = md;
            try {
                // auth() rejects metadata whose `resource` does not cover the server URL.
                const sel = await selectResourceURL(url, {}, md);
                out.sdkDiscovered.selectedResource = sel?.href ?? null;
                out.sdkDiscovered.resourceAcceptedBySdk = true;
            } catch (e) {
                out.sdkDiscovered.resourceAcceptedBySdk = false;
                out.sdkDiscovered.resourceError = errText(e);
                // A real SDK auth() flow would abort here, so this is a failure.
                problems.push(`SDK rejects the metadata's resource: ${errText(e)}`);
            }
        } catch (e) {
            out.sdkDiscovered.viaChallengeError = errText(e);
            problems.push(`SDK discovery via challenge failed: ${errText(e)}`);
        }
    }
    try {
        // Path-aware RFC 9728 well-known probing, without the challenge hint (report only).
        out.sdkDiscovered.viaWellKnown = await discoverOAuthProtectedResourceMetadata(url, undefined, discoveryFetch);
    } catch (e) {
        out.sdkDiscovered.viaWellKnownError = errText(e);
    }
    out.sdkDiscovered.requests = discoveryLog.map(e => ({ url: e.url, status: e.status }));

    // 4. The SDK client itself, with no authProvider: connect must fail with 401.
    phase = 'sdk-connect';
    const sdkLog = [];
    const transport = new StreamableHTTPClientTransport(url, {
        requestInit: args.token ? { headers: authHeaders } : undefined,
        fetch: makeRecordingFetch(sdkLog),
        reconnectionOptions: { initialReconnectionDelay: 1000, maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1, maxRetries: 0 }
    });
    const client = new Client({ name: 'mcp-auth-gateway-e2e', version: '0.0.0' }, { capabilities: {} });
    client.onerror = () => {};
    try {
        await client.connect(transport);
        problems.push('SDK client connected without valid credentials');
        out.sdkConnectError = null;
        await client.close().catch(() => {});
    } catch (e) {
        out.sdkConnectError = errText(e);
        out.sdkConnectErrorCode = e?.code ?? null;
        if (e?.code !== 401) problems.push(`SDK connect failed, but not with 401: ${errText(e)}`);
    }
    out.sdkHttp = summarizeLog(sdkLog);

    // 5. Other methods without credentials (report only).
    phase = 'other-methods';
    out.otherMethods = {};
    for (const [method, headers] of [
        ['GET', { Accept: 'text/event-stream' }],
        ['DELETE', {}]
    ]) {
        try {
            const r = await fetch(url, {
                method,
                redirect: 'manual',
                headers: { ...headers, ...authHeaders },
                signal: AbortSignal.timeout(5000)
            });
            out.otherMethods[method] = { status: r.status, wwwAuthenticate: r.headers.get('www-authenticate') };
            await r.body?.cancel();
        } catch (e) {
            out.otherMethods[method] = { error: errText(e) };
        }
    }

    out.elapsedMs = elapsed();
    if (problems.length) {
        out.ok = false;
        out.error = problems.join('; ');
    } else {
        out.ok = true;
    }
    return out;
}

// ---------------------------------------------------------------------------
if (!finished) {
    const globalTimer = setTimeout(() => fail(new Error(`global timeout of ${args.timeoutMs} ms exceeded (phase: ${phase})`)), args.timeoutMs);
    const run = args.scenario === 'full' ? scenarioFull : scenarioUnauthorized;
    run()
        .then(result => {
            clearTimeout(globalTimer);
            emit(result, result.ok ? 0 : 1);
        })
        .catch(err => {
            clearTimeout(globalTimer);
            fail(err);
        });
}
