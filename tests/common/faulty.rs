//! A scripted authorization server for fault injection: plain HTTP on 127.0.0.1, whose
//! introspection endpoint answers as told (well, slowly, wrongly, hugely, or signed with
//! good, bad or unknown keys), with discovery, a JWKS and a bearer-token endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// How the introspection endpoint answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// A good answer (active, bound to `thumbprint`, UK consent claims); `unknown-…` tokens are inactive.
    None,
    Delay(Duration),
    Status(u16),
    NotJson,
    /// 10 MB of JSON.
    Huge,
    /// `"active": "true"`.
    ActiveIsString,
    /// Signed (RFC 9701) with the published key.
    Signed,
    /// Signed with another key under the published key's `kid`.
    SignedBadSignature,
    /// Signed with a key whose `kid` is not published.
    SignedUnknownKey,
    /// Signed, but for another issuer.
    SignedWrongIssuer,
}

struct Key {
    encoding: EncodingKey,
    jwk: Value,
}

fn key(kid: &str) -> Key {
    let pair = rcgen::KeyPair::generate().unwrap();
    let raw = pair.public_key_raw();
    let (x, y) = (&raw[1..33], &raw[33..65]);
    Key {
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
    }
}

pub struct FaultyServer {
    pub addr: SocketAddr,
    pub calls: AtomicU64,
    pub token_calls: AtomicU64,
    fault: Mutex<Fault>,
    thumbprint: Mutex<String>,
    published: Key,
    other: Key,
    /// The bearer token the introspection endpoint accepts, when bearer auth is used.
    bearer: Mutex<Option<String>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl FaultyServer {
    /// Serves on a free loopback port; tokens it calls active are bound to `thumbprint`.
    pub async fn start(thumbprint: String) -> Arc<FaultyServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Arc::new(FaultyServer {
            addr: listener.local_addr().unwrap(),
            calls: AtomicU64::new(0),
            token_calls: AtomicU64::new(0),
            fault: Mutex::new(Fault::None),
            thumbprint: Mutex::new(thumbprint),
            published: key("k1"),
            other: key("k2"),
            bearer: Mutex::new(None),
            task: Mutex::new(None),
        });
        let app = Router::new()
            .route("/introspect", post(introspect))
            .route("/token", post(token))
            .route(
                "/jwks",
                get(|State(s): State<Arc<FaultyServer>>| async move { Json(json!({"keys": [s.published.jwk]})) }),
            )
            .route("/.well-known/openid-configuration", get(discovery))
            .with_state(server.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        *server.task.lock().unwrap() = Some(task);
        server
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Binds the tokens it calls active to this certificate thumbprint.
    pub fn bind_to(&self, thumbprint: String) {
        *self.thumbprint.lock().unwrap() = thumbprint;
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Makes the current bearer token invalid, as if it had expired at the server.
    pub fn expire_bearer(&self) {
        *self.bearer.lock().unwrap() = Some("expired".into());
    }

    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.stop();
    }
}

type Shared = State<Arc<FaultyServer>>;

async fn discovery(State(s): Shared) -> Json<Value> {
    let issuer = s.issuer();
    Json(json!({
        "issuer": issuer,
        "introspection_endpoint": format!("{issuer}/introspect"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
    }))
}

/// client_credentials with client_secret_basic `fapi-gateway:test-secret`.
async fn token(State(s): Shared, headers: HeaderMap) -> Response {
    s.token_calls.fetch_add(1, Ordering::SeqCst);
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("fapi-gateway:test-secret"));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let token = format!("bearer-{}", uuid::Uuid::new_v4());
    *s.bearer.lock().unwrap() = Some(token.clone());
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600})).into_response()
}

fn body_for(s: &FaultyServer, token: &str) -> Value {
    if token.starts_with("unknown-") {
        return json!({"active": false});
    }
    json!({
        "active": true, "scope": "openid accounts", "client_id": "financroo", "sub": "alice",
        "exp": fapi_enforcement::introspection::unix_now() + 3600, "cnf": {"x5t#S256": *s.thumbprint.lock().unwrap()},
        "aud": fapi_devkit::fixtures::audience_of("gobank"),
        "ConsentId": format!("consent-{token}"), "ConsentType": "account-access-consent", "Status": "Authorised",
        "Permissions": ["ReadAccountsBasic", "ReadBalances"], "AccountIDs": ["GB-1001"],
    })
}

fn signed(s: &FaultyServer, body: Value, key: &Key, kid: &str, issuer: &str) -> Response {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    header.typ = Some("token-introspection+jwt".into());
    let claims = json!({"iss": issuer, "aud": "fapi-gateway", "iat": fapi_enforcement::introspection::unix_now(), "token_introspection": body});
    let jwt = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
    let _ = s;
    ([("content-type", "application/token-introspection+jwt")], jwt).into_response()
}

async fn introspect(State(s): Shared, headers: HeaderMap, Form(form): Form<Vec<(String, String)>>) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let bearer = s.bearer.lock().unwrap().clone();
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let authorized = match &bearer {
        Some(b) => auth == format!("Bearer {b}"),
        None => {
            auth == format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("fapi-gateway:test-secret"))
        }
    };
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let token = form.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone()).unwrap_or_default();
    let fault = s.fault.lock().unwrap().clone();
    let issuer = s.issuer();
    match fault {
        Fault::None => Json(body_for(&s, &token)).into_response(),
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            Json(body_for(&s, &token)).into_response()
        }
        Fault::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Fault::NotJson => ([("content-type", "application/json")], "{\"active\": tru").into_response(),
        Fault::Huge => {
            // Just over the 256 KiB limit: cheap to make even on a loaded machine (a 10 MiB one
            // could miss the 500 ms timeout and count as a timeout instead).
            let filler = "x".repeat(300 * 1024);
            Json(json!({"active": true, "filler": filler})).into_response()
        }
        Fault::ActiveIsString => Json(json!({"active": "true", "scope": "openid accounts"})).into_response(),
        Fault::Signed => signed(&s, body_for(&s, &token), &s.published, "k1", &issuer),
        Fault::SignedBadSignature => signed(&s, body_for(&s, &token), &s.other, "k1", &issuer),
        Fault::SignedUnknownKey => signed(&s, body_for(&s, &token), &s.other, "k9", &issuer),
        Fault::SignedWrongIssuer => signed(&s, body_for(&s, &token), &s.published, "k1", "http://elsewhere"),
    }
}
