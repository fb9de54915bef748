// Test fixture: the certified `oidc-provider` (v8) as a real authorization server for
// fapi-gateway's integration tests. HTTPS on 127.0.0.1 only, in-memory storage.
//
//   node tests/oidc-provider/server.mjs --port PORT --certs DIR [--gateway-jwks FILE]
//
// DIR is a PKI from `fapi-gateway certs --out DIR`. FILE is a public JWKS for the
// private_key_jwt client `gw-jwt` (that client is left out without it). Once listening,
// prints one line to stdout: READY {"issuer":"https://127.0.0.1:PORT","port":PORT}
// Everything else goes to stderr.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';
// Not public API, but the package has no "exports" map: needed to re-register the grant
// with an extra parameter (see below).
import * as clientCredentials from 'oidc-provider/lib/actions/grants/client_credentials.js';

// oidc-provider prints its notices with console.info (stdout); stdout belongs to READY.
console.log = console.info = console.error;

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    certs: { type: 'string' },
    'gateway-jwks': { type: 'string' },
    // For a container: listen on all addresses, and name the issuer by the service's host.
    host: { type: 'string', default: '127.0.0.1' },
    'issuer-host': { type: 'string', default: '127.0.0.1' },
  },
});
if (!args.certs) {
  console.error('usage: server.mjs --port PORT --certs DIR [--gateway-jwks FILE]');
  process.exit(2);
}
const pem = (name) => fs.readFileSync(path.join(args.certs, name));

// Client certificates are optional at the TLS level (the token endpoint decides), but
// only ones that chain to ca.pem count: see getCertificate.
const server = https.createServer({
  cert: pem('gateway.pem'),
  key: pem('gateway.key'),
  ca: pem('ca.pem'),
  requestCert: true,
  rejectUnauthorized: false,
  minVersion: 'TLSv1.2',
});

// Listen first: with --port 0 the issuer is only known once the port is.
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), args.host, resolve);
});
const { port } = server.address();
const issuer = `https://${args['issuer-host']}:${port}`;

// RFC 8705 compares tls_client_auth_subject_dn as an RFC 4514 string: last RDN first.
// Node's X509Certificate#subject lists RDNs in certificate order, one per line.
const rfc4514 = (cert) => cert.subject.split('\n').reverse().join(',');
const peer = (ctx) => (ctx.socket.authorized ? ctx.socket.getPeerX509Certificate() : undefined);

const noGrants = { grant_types: [], response_types: [], redirect_uris: [] };
const tpp = (clientId, dn) => ({
  client_id: clientId,
  token_endpoint_auth_method: 'tls_client_auth',
  tls_client_auth_subject_dn: dn,
  tls_client_certificate_bound_access_tokens: true,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  scope: 'openid accounts',
});
const clients = [
  tpp('financroo', rfc4514(new crypto.X509Certificate(pem('tpp.pem')))),
  tpp('other-tpp', rfc4514(new crypto.X509Certificate(pem('other-tpp.pem')))),
  // The gateway's introspection clients, one per client authentication method.
  { client_id: 'gw-basic', client_secret: 'gw-basic-secret', token_endpoint_auth_method: 'client_secret_basic', ...noGrants },
  { client_id: 'gw-post', client_secret: 'gw-post-secret', token_endpoint_auth_method: 'client_secret_post', ...noGrants },
  {
    client_id: 'gw-mtls',
    token_endpoint_auth_method: 'tls_client_auth',
    tls_client_auth_subject_dn: rfc4514(new crypto.X509Certificate(pem('gateway-client.pem'))),
    ...noGrants,
  },
];
if (args['gateway-jwks']) {
  clients.push({
    client_id: 'gw-jwt',
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: JSON.parse(fs.readFileSync(args['gateway-jwks'], 'utf8')),
    ...noGrants,
  });
}

// Demo consent, attached to a token when the TPP sends consent_id at the token endpoint.
const consentClaims = (consentId) => ({
  sub: 'alice',
  consent_id: consentId,
  ConsentId: consentId,
  ConsentType: 'account-access-consent',
  Status: 'Authorised',
  Permissions: ['ReadAccountsBasic', 'ReadBalances'],
  AccountIDs: ['GB-1001'],
});

const rsaJwk = () => crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients,
  // One method list for every endpoint: in v8 a client authenticates at token,
  // introspection and revocation with its token_endpoint_auth_method.
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'tls_client_auth'],
  enabledJWA: { clientAuthSigningAlgValues: ['RS256', 'PS256', 'ES256'] },
  scopes: ['openid', 'accounts'],
  // A fresh signing key per run (ID tokens are never issued here, but a key is required)
  // avoids the "development-only keys" warning; same for the cookie keys.
  jwks: { keys: [{ ...rsaJwk(), kid: 'fixture', use: 'sig', alg: 'RS256' }] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  ttl: { ClientCredentials: 600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // RFC 8707: tokens name the API they are for in `aud`, which the gateway's policies
    // require (`audiences`). A TPP that names no resource gets Go Bank's.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'https://api.gobank.example',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => ({
        scope: 'openid accounts',
        audience: resourceIndicator,
        accessTokenFormat: 'opaque',
      }),
    },
    revocation: { enabled: true },
    introspection: {
      enabled: true,
      // gw-* clients may introspect any token; others only their own.
      allowedPolicy: async (ctx, client, token) => client.clientId.startsWith('gw-') || client.clientId === token.clientId,
    },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      tlsClientAuth: true,
      getCertificate: peer,
      certificateAuthorized: (ctx) => ctx.socket.authorized,
      certificateSubjectMatches: (ctx, property, expected) => {
        const cert = peer(ctx);
        return property === 'tls_client_auth_subject_dn' && !!cert && rfc4514(cert) === expected;
      },
    },
  },
  // Access tokens stay opaque (accessTokenFormat above). For opaque tokens these claims
  // are stored with the token and returned top-level by introspection.
  extraTokenClaims: async (ctx, token) => {
    const consentId = ctx?.oidc?.params?.consent_id;
    return token.kind === 'ClientCredentials' && consentId ? consentClaims(consentId) : undefined;
  },
  // Every endpoint of this server accepts client certificates, so the RFC 8705 aliases
  // are the endpoints themselves (oidc-provider does not publish them on its own).
  discovery: {
    mtls_endpoint_aliases: {
      token_endpoint: `${issuer}/token`,
      introspection_endpoint: `${issuer}/token/introspection`,
      revocation_endpoint: `${issuer}/token/revocation`,
    },
  },
});

// `extraParams` only reaches the authorization-type endpoints in v8; the token endpoint
// keeps a per-grant parameter list, so re-register client_credentials with consent_id.
provider.registerGrantType(
  'client_credentials',
  clientCredentials.handler,
  new Set([...clientCredentials.parameters, 'consent_id']),
);

for (const event of ['server_error', 'grant.error', 'introspection.error', 'revocation.error']) {
  // error_detail says why client authentication failed (the response only says that it did).
  provider.on(event, (ctx, err) => console.error(`${event}: ${err?.message} (${err?.error_detail ?? err?.error_description ?? ''})`));
}

server.on('request', provider.callback());

const stop = () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

process.stdout.write(`READY ${JSON.stringify({ issuer, port })}\n`);
