#!/usr/bin/env node
// A real OpenID Connect provider (npm `oidc-provider`, pinned in package.json) standing in for
// an upstream identity provider in mcp-auth-gateway's end-to-end tests:
//
//   node tests/node/oidc_provider.mjs --port 0 --client-id ID --client-secret SECRET \
//        --redirect-uri URI [--redirect-uri URI2 ...] [--user alice] \
//        [--email alice@example.com] [--groups mcp-users,admins] [--name "Alice Example"] \
//        [--id-token-alg RS256|ES256]
//
// It listens on 127.0.0.1 (an ephemeral port with --port 0) with the issuer
// `http://127.0.0.1:PORT` (no trailing slash) and, once listening, prints exactly one line
// on stdout: {"issuer":"http://127.0.0.1:PORT","ready":true}. Everything else (including
// oidc-provider's own notices, some of which it writes with console.info) goes to stderr.
// It exits on SIGTERM/SIGINT, and when its stdin is a pipe or socket that closes (a stdin of
// /dev/null is ignored, so `Stdio::null()` does not stop it).
//
// One confidential client, from the arguments: client_secret_basic at the token endpoint,
// grant types authorization_code and refresh_token, response type code, PKCE (S256) required.
// Scopes: openid email profile groups offline_access. Claims: sub (= --user), email,
// email_verified (true), name, groups (an array); they are in the ID token too
// (conformIdTokenClaims: false), not only at userinfo. ID tokens are signed RS256 by
// default (--id-token-alg ES256 for ES256); the JWKS (discovery `jwks_uri`, /jwks) holds a
// fresh RSA and a fresh P-256 key, each with a kid.
//
// Interactions approve themselves: the interaction URL (/interaction/UID) shows no page, it
// logs the configured user in and grants the requested scopes and claims at once (a saved
// Grant), so a client that just follows redirects goes GET /auth?... → 303 /interaction/UID
// → 303 /auth/UID → 303 REDIRECT_URI?code=…&state=…&iss=….

import http from 'node:http';
import { fstatSync } from 'node:fs';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

// stdout is reserved for the ready line; oidc-provider prints notices with console.info.
for (const name of ['log', 'info', 'debug', 'warn']) {
    console[name] = (...a) => console.error(...a);
}

function parseArgs(argv) {
    const out = {
        port: 0,
        redirectUris: [],
        user: 'alice',
        email: undefined,
        groups: ['mcp-users'],
        name: undefined,
        idTokenAlg: 'RS256'
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
            return argv[++i];
        };
        switch (a) {
            case '--port':
                out.port = Number(next());
                break;
            case '--client-id':
                out.clientId = next();
                break;
            case '--client-secret':
                out.clientSecret = next();
                break;
            case '--redirect-uri':
                out.redirectUris.push(next());
                break;
            case '--user':
                out.user = next();
                break;
            case '--email':
                out.email = next();
                break;
            case '--groups':
                out.groups = next().split(',').map(g => g.trim()).filter(Boolean);
                break;
            case '--name':
                out.name = next();
                break;
            case '--id-token-alg':
                out.idTokenAlg = next();
                if (!['RS256', 'ES256'].includes(out.idTokenAlg)) throw new Error('--id-token-alg must be RS256 or ES256');
                break;
            default:
                throw new Error(`unknown argument: ${a}`);
        }
    }
    if (!out.clientId) throw new Error('--client-id is required');
    if (!out.clientSecret) throw new Error('--client-secret is required');
    if (!out.redirectUris.length) throw new Error('at least one --redirect-uri is required');
    for (const uri of out.redirectUris) new URL(uri);
    if (!Number.isInteger(out.port) || out.port < 0 || out.port > 65535) throw new Error('--port must be 0..65535');
    out.email ??= `${out.user}@example.com`;
    out.name ??= out.user;
    return out;
}

let args;
try {
    args = parseArgs(process.argv.slice(2));
} catch (e) {
    console.error(`[oidc_provider] ${e.message}`);
    process.exit(2);
}

// Imported only now, after console.info went to stderr: the package warns when it loads
// (on Node 20 "Unsupported runtime. Use Node.js v22.x LTS": a notice only, it works).
const { default: Provider } = await import('oidc-provider');

function signingKey(type, alg, options) {
    const { privateKey } = generateKeyPairSync(type, options);
    return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `${alg.toLowerCase()}-${randomBytes(4).toString('hex')}` };
}

const account = {
    accountId: args.user,
    async claims() {
        return { sub: args.user, email: args.email, email_verified: true, name: args.name, groups: args.groups };
    }
};

const configuration = {
    clients: [
        {
            client_id: args.clientId,
            client_secret: args.clientSecret,
            token_endpoint_auth_method: 'client_secret_basic',
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            redirect_uris: args.redirectUris,
            id_token_signed_response_alg: args.idTokenAlg
        }
    ],
    jwks: {
        keys: [
            signingKey('rsa', 'RS256', { modulusLength: 2048 }),
            signingKey('ec', 'ES256', { namedCurve: 'P-256' })
        ]
    },
    // Cookies: oidc-provider marks them Secure only when the request is secure (https, or a
    // trusted X-Forwarded-Proto with `proxy`), so on plain http loopback they carry no Secure
    // and a cookie jar sends them back. oidc-provider 9 has no NODE_ENV / production switch and
    // accepts an http issuer as is: nothing else is needed for http.
    cookies: {
        keys: [randomBytes(32).toString('base64url')],
        long: { httpOnly: true, sameSite: 'lax' },
        short: { httpOnly: true, sameSite: 'lax' }
    },
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    claims: {
        openid: ['sub'],
        email: ['email', 'email_verified'],
        profile: ['name'],
        groups: ['groups']
    },
    // The scope's claims in the ID token as well as at userinfo.
    conformIdTokenClaims: false,
    findAccount: async (_ctx, id) => (id === args.user ? account : undefined),
    interactions: {
        url: (_ctx, interaction) => `/interaction/${interaction.uid}`
    },
    features: {
        // Our own interaction handler below; no built-in development login page.
        devInteractions: { enabled: false },
        // Off: a `resource` parameter is ignored (on, oidc-provider refuses any resource it was
        // not configured for), and the access token is the opaque one userinfo takes.
        resourceIndicators: { enabled: false },
        userinfo: { enabled: true },
        revocation: { enabled: true }
    },
    pkce: { required: () => true },
    renderError(ctx, out, error) {
        console.error(`[oidc_provider] error page: ${out.error}: ${out.error_description ?? ''} (${error?.message ?? ''})`);
        ctx.type = 'text/plain; charset=utf-8';
        ctx.body = `${out.error}: ${out.error_description ?? ''}\n`;
    }
};

// The issuer needs the port; with --port 0 the port is known only after listen().
const server = http.createServer();
await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(args.port, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, configuration);
provider.on('server_error', (_ctx, err) => console.error(`[oidc_provider] server_error: ${err?.stack ?? err}`));
provider.on('grant.error', (_ctx, err) => console.error(`[oidc_provider] grant.error: ${err?.message ?? err}`));
provider.on('authorization.error', (_ctx, err) => console.error(`[oidc_provider] authorization.error: ${err?.message ?? err}`));
const callback = provider.callback();

// The interaction: log in as the configured user and consent to everything requested.
async function autoApprove(req, res) {
    const details = await provider.interactionDetails(req, res);
    const { prompt, params, grantId } = details;
    const grant = grantId
        ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: args.user, clientId: params.client_id });
    if (params.scope) grant.addOIDCScope(String(params.scope));
    const missing = prompt.details ?? {};
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
    }
    const savedGrantId = await grant.save();
    console.error(`[oidc_provider] interaction ${details.uid} (${prompt.name}): approved ${args.user} for ${params.client_id}, scope ${params.scope ?? ''}`);
    await provider.interactionFinished(
        req,
        res,
        { login: { accountId: args.user }, consent: { grantId: savedGrantId } },
        { mergeWithLastSubmission: false }
    );
}

server.on('request', (req, res) => {
    console.error(`[oidc_provider] ${req.method} ${req.url}`);
    if (req.url.startsWith('/interaction/')) {
        autoApprove(req, res).catch(err => {
            console.error(`[oidc_provider] interaction failed: ${err?.stack ?? err}`);
            if (!res.headersSent) {
                res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' });
            }
            res.end(`interaction failed: ${err?.message ?? err}\n`);
        });
        return;
    }
    callback(req, res);
});

process.stdout.write(JSON.stringify({ issuer, ready: true }) + '\n');

function shutdown(why) {
    console.error(`[oidc_provider] exiting: ${why}`);
    server.close();
    process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
// Stop with the parent when stdin is a pipe (or socket) that closes; /dev/null never counts.
try {
    const stdin = fstatSync(0);
    if (stdin.isFIFO() || stdin.isSocket()) {
        process.stdin.on('end', () => shutdown('stdin closed'));
        process.stdin.on('error', () => shutdown('stdin error'));
        process.stdin.resume();
    }
} catch {
    // no stdin at all
}
