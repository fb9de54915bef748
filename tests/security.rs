//! The security review's findings, each as a class: revocation whatever API first saw a
//! token, tokens bound to their API (`aud`), consent kinds, parser differentials with the
//! bank (duplicate JSON members, underscore headers, `;` path parameters, bodies on
//! bodiless routes). Every test here failed on the gateway before the fix.

mod common;

use common::*;
use rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
use serde_json::json;

/// A second UK API on the same authorization server, with its own audience.
fn second_uk_api() -> Options {
    Options {
        policy_appends: vec![(
            "ukbank2.toml".into(),
            "[api]\nprefix = \"/ukbank2\"\nupstream = \"hyperscalebank\"\nprofile = \"obuk\"\nprofile_routes = true\naudiences = [\"https://api.ukbank2.example\"]\n".into(),
        ), (
            "hyperscalebank.toml".into(),
            "\n[[route]]\npath = \"/status\"\npublic = true\nconsent = false\n".into(),
        )],
        ..Options::default()
    }
}

/// Revokes `consent` at the authorization server, which tells the gateway.
async fn revoke(w: &World, consent: &str) {
    let r = w.tpp.delete(w.as_url(&format!("/consents/{consent}"))).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_consent_is_refused_next_whichever_api_first_saw_the_token() {
    let w = World::start_with(second_uk_api()).await;
    // Each way a token can first reach the gateway before its own API: another bank's API
    // (its mapping reads no consent), a refused request, a public route.
    let first_visits: [(&str, u16); 4] = [
        ("/hyperscalebank/accounts", 401),
        ("/ukbank2/accounts", 401),
        ("/gobank/accounts/GB-1002/balances", 403),
        ("/hyperscalebank/status", 404), // forwarded; the bank has no such page
    ];
    for (first, status) in first_visits {
        let (consent, token) = w.go_bank_token().await;
        assert_eq!(w.get(&w.tpp, first, &token).await.status(), status, "{first}");
        assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200, "{first}");
        let calls = w.introspections();
        revoke(&w, &consent).await;
        let (status, _, _, code) = refusal(w.get(&w.tpp, "/gobank/accounts", &token).await).await;
        assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.InvalidConsentStatus"), "first seen at {first}");
        assert_eq!(w.introspections(), calls + 1, "asked again, at once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_accepted_only_by_the_api_it_was_issued_for() {
    let w = World::start_with(second_uk_api()).await;
    let (_, token) = w.go_bank_token().await;
    let before = w.fixtures.hyperscale_bank.requests();
    let (status, challenge, id, code) = refusal(w.get(&w.tpp, "/ukbank2/accounts", &token).await).await;
    assert_eq!((status, code.as_str()), (401, "UK.OBIE.Header.Invalid"));
    assert!(challenge.contains("error=\"invalid_token\"") && challenge.contains("aud"), "{challenge}");
    assert!(!id.is_empty());
    assert_eq!(w.fixtures.hyperscale_bank.requests(), before, "Go Bank's consent never reached another bank");
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_access_consent_cannot_pay() {
    let w = World::start().await;
    let consent = w.consent(&w.tpp, "gobank", &GO_BANK_PERMISSIONS, "alice", &["GB-1001"]).await;
    // The authorization server let the TPP ask for `payments` too.
    let token = w.token(&w.tpp, Some(&consent), "openid accounts payments", None).await;
    let before = w.bank_requests();
    let body = json!({"Data": {"ConsentId": consent, "Initiation": {"InstructedAmount": {"Amount": "99.00", "Currency": "GBP"}}}, "Risk": {}});
    let r = w.tpp.post(w.url("/gobank/domestic-payments")).bearer_auth(&token).json(&body).send().await.unwrap();
    let (status, _, _, code) = refusal(r).await;
    assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.ConsentMismatch"));
    assert_eq!(w.bank_requests(), before, "nothing reached the bank");
    // The same token still reads accounts: the consent is what it is.
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
}

/// A world, a read token for a consent with statement and transaction permissions, and a
/// payment token.
async fn parse_world() -> (World, String, String, String, String) {
    let w = World::start().await;
    let permissions = ["ReadAccountsBasic", "ReadStatementsBasic", "ReadTransactionsBasic", "ReadTransactionsDebits"];
    let consent = w.consent(&w.tpp, "gobank", &permissions, "alice", &["GB-1001"]).await;
    let token = w.token(&w.tpp, Some(&consent), "openid accounts", None).await;
    let pay_consent = w.consent_of_kind(&w.tpp, "gobank", "domestic-payment-consent", &[], "alice", &["GB-1001"]).await;
    let pay_token = w.token(&w.tpp, Some(&pay_consent), "openid payments", None).await;
    (w, consent, token, pay_consent, pay_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_naming_a_member_twice_is_refused() {
    let (w, _, _, pay_consent, pay_token) = parse_world().await;
    let before = w.bank_requests();
    // The gateway would check one ConsentId, a first-wins bank would pay the other.
    let twice = format!(
        r#"{{"Data": {{"ConsentId": "consent-of-someone-else", "ConsentId": "{pay_consent}", "Initiation": {{}}}}, "Risk": {{}}}}"#
    );
    let r = w
        .tpp
        .post(w.url("/gobank/domestic-payments"))
        .bearer_auth(&pay_token)
        .header("content-type", "application/json")
        .body(twice)
        .send()
        .await
        .unwrap();
    let (status, challenge, _, code) = refusal(r).await;
    // The body is at fault, not a header (issue 15: codes by what is at fault).
    assert_eq!((status, code.as_str()), (400, "UK.OBIE.Resource.InvalidFormat"));
    assert!(challenge.contains("invalid_request"), "{challenge}");
    assert_eq!(w.bank_requests(), before, "nothing reached the bank");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_never_reach_the_bank() {
    let (w, _, token, _, _) = parse_world().await;
    let before = w.bank_requests();
    // Tomcat and Spring resolve `..;` as `..`: this is /accounts/GB-1001/transactions to them.
    for path in [
        "/gobank/accounts/GB-1001/statements/..;/transactions",
        "/gobank/accounts/GB-1001;x=1/statements/S1/transactions",
        "/gobank/accounts/GB-1001/statements/S1;jsessionid=1/transactions",
        "/gobank/accounts/GB-1001/statements/S1%3B/transactions",
    ] {
        let (status, _, _, _) = refusal(w.get(&w.tpp, path, &token).await).await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(w.bank_requests(), before, "none of these reached the bank");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_on_a_route_that_takes_none_is_refused_before_forwarding() {
    let (w, _, token, _, _) = parse_world().await;
    let before = w.bank_requests();
    // Sized, over HTTP/1.1 and HTTP/2.
    for client in [&w.tpp, &client(&w.pki.ca(), Some((&w.pki.tpp_cert(), &w.pki.tpp_key())), true)] {
        let r = client.get(w.url("/gobank/accounts")).bearer_auth(&token).body("{\"x\": 1}").send().await.unwrap();
        assert_eq!(refusal(r).await.0, 400);
    }
    // Chunked, well-formed and not.
    for body in ["5\r\nhello\r\n0\r\n\r\n", "zz\r\n"] {
        let request = format!(
            "GET /gobank/accounts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
        );
        let status = raw_request(&w, TLS13_AES_128_GCM_SHA256, request.as_bytes()).await.unwrap();
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{body:?}");
    }
    assert_eq!(w.bank_requests(), before, "none of these reached the bank");
    // Without a body the same request passes.
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_with_underscores_never_reach_the_bank() {
    let (w, consent, token, _, _) = parse_world().await;
    // CGI, WSGI and PHP stacks read `X_Consent_Id` as the identity header `X-Consent-Id`.
    let r = w
        .tpp
        .get(w.url("/gobank/accounts"))
        .bearer_auth(&token)
        .header("X_Consent_Id", "consent-of-someone-else")
        .header("x_subject", "mallory")
        .header("X-Consent_Accounts", "GB-2001")
        .header("x-fapi-customer-ip-address", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = w.fixtures.go_bank.last_headers().unwrap();
    assert!(seen.keys().all(|k| !k.as_str().contains('_')), "{seen:?}");
    assert_eq!(seen["x-consent-id"], consent.as_str());
    assert_eq!(seen["x-fapi-customer-ip-address"], "203.0.113.7", "ordinary headers pass");
}
