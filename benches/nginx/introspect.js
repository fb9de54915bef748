// Token introspection for nginx `auth_request` (njs 0.7.x, Debian 12's libnginx-mod-http-js),
// the pattern NGINX documents for OAuth 2.0 token introspection, plus the RFC 8705 binding
// check fapi-gateway does: the token's cnf["x5t#S256"] must be the SHA-256 thumbprint of
// this connection's client certificate.
//
// nginx.conf.template wires it up:
//   js_set $introspection_body introspect.formBody;    body of the call to the AS
//   location = /_introspect { internal; js_content introspect.introspect; }
//   location /_oauth2_send_request { internal; proxy_method POST; proxy_cache ...; }
// and the js_var variables below, which auth_request_set hands to the bank's request.

import crypto from 'crypto';

// "Bearer <token>" -> token, or null.
function bearer(r) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(r.headersIn.Authorization || '');
    return m ? m[1] : null;
}

// js_set: the form body of the introspection request (RFC 7662 §2.1), URL-encoded.
function formBody(r) {
    const token = bearer(r);
    return token ? 'token=' + encodeURIComponent(token) + '&token_type_hint=access_token' : '';
}

// RFC 8705 §3.1: base64url (no padding) SHA-256 of the DER client certificate.
function thumbprint(pem) {
    const b64 = pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
    return crypto.createHash('sha256').update(Buffer.from(b64, 'base64')).digest('base64url');
}

function refuse(r, error, why) {
    r.headersOut['WWW-Authenticate'] = 'Bearer error="' + error + '"';
    r.warn('introspect: refused: ' + why);
    r.return(401);
}

// js_content of the auth_request location: 204 lets the request through, 401 refuses it,
// anything else makes auth_request answer 500.
async function introspect(r) {
    if (!bearer(r)) {
        r.headersOut['WWW-Authenticate'] = 'Bearer';
        return r.return(401);
    }
    // A GET subrequest, so proxy_cache (which caches GET/HEAD only) applies; the
    // location turns it into the POST to the authorization server.
    const reply = await r.subrequest('/_oauth2_send_request');
    if (reply.status !== 200) {
        r.error('introspect: authorization server answered ' + reply.status);
        return r.return(503);   // auth_request turns it into 500
    }
    let t;
    try {
        t = JSON.parse(reply.responseText);
    } catch (e) {
        r.error('introspect: response is not JSON');
        return r.return(503);
    }
    if (t.active !== true) {
        return refuse(r, 'invalid_token', 'token inactive');
    }
    const bound = t.cnf && t.cnf['x5t#S256'];
    const pem = r.variables.ssl_client_raw_cert;
    if (!bound || !pem || thumbprint(pem) !== bound) {
        return refuse(r, 'invalid_token', 'token not bound to this client certificate');
    }
    // The consent must be authorised (OBUK `Status`, generic `status`), as fapi-gateway's
    // policy requires; 403 like the gateway. Scopes/permissions per route are not checked.
    const status = t.Status || t.status;
    if (status !== undefined && status !== 'Authorised' && status !== 'authorized') {
        r.warn('introspect: refused: consent status ' + status);
        return r.return(403);
    }
    // For the bank (js_var variables, read by auth_request_set). OBUK and generic shapes.
    r.variables.consent_id = t.ConsentId || t.consent_id || '';
    r.variables.consent_accounts = (t.AccountIDs || t.account_ids || []).join(',');
    r.variables.consent_subject = t.sub || '';
    r.variables.consent_client_id = t.client_id || '';
    r.variables.consent_scope = t.scope || '';
    r.return(204);
}

export default { introspect, formBody };
