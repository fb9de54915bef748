//! The gateway end to end: real TLS handshakes with generated certificates, the mock
//! authorization server over HTTPS, the mock banks over HTTP, all on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn accounts_of(body: &Value) -> Vec<String> {
    body["Data"]["Account"].as_array().unwrap().iter().map(|a| a["AccountId"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_bank_happy_path_forwards_identity_headers() {
    let w = World::start().await;
    let (consent, token) = w.go_bank_token().await;

    let r = w.get(&w.tpp, "/gobank/accounts", &token).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-fapi-interaction-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::try_parse(&id).is_ok(), "generated interaction id {id}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(accounts_of(&body), vec!["GB-1001"]);

    let seen = w.fixtures.go_bank.last_headers().unwrap();
    let h = |n: &str| seen.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(h("x-consent-id"), Some(consent));
    assert_eq!(h("x-client-id").as_deref(), Some("financroo"));
    assert_eq!(h("x-subject").as_deref(), Some("alice"));
    assert_eq!(h("x-granted-scopes").as_deref(), Some("openid accounts"));
    assert_eq!(h("x-consent-accounts").as_deref(), Some("GB-1001"));
    assert_eq!(h("x-fapi-interaction-id"), Some(id));
    assert_eq!(h("authorization"), None, "the token is not forwarded");

    for path in [
        "/gobank/accounts/GB-1001",
        "/gobank/accounts/GB-1001/balances",
        "/gobank/accounts/GB-1001/transactions",
        "/gobank/balances",
        "/gobank/transactions",
    ] {
        let r = w.get(&w.tpp, path, &token).await;
        assert_eq!(r.status(), 200, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body.to_string().contains("GB-1001"), "{path}: {body}");
        assert!(!body.to_string().contains("GB-1002"), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperscale_bank_happy_path_over_http2() {
    let w = World::start().await;
    let consent = w.consent(&w.tpp, "hyperscalebank", &[], "alice", &["HS-1001", "HS-1002"]).await;
    let token = w.token(&w.tpp, Some(&consent), "openid accounts", None).await;
    let h2 = client(&w.pki.ca(), Some((&w.pki.tpp_cert(), &w.pki.tpp_key())), true);
    let r = w.get(&h2, "/hyperscalebank/accounts/HS-1002/balances", &token).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["Data"]["Balance"][0]["AccountId"], "HS-1002");
    let r = w.get(&w.tpp, "/hyperscalebank/accounts", &token).await;
    assert_eq!(accounts_of(&r.json().await.unwrap()), vec!["HS-1001", "HS-1002"]);
    assert_eq!(w.fixtures.hyperscale_bank.last_headers().unwrap()["x-consent-id"], consent.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_without_a_trusted_client_certificate_are_refused() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    let anonymous = client(&w.pki.ca(), None, false);
    let e = anonymous.get(w.url("/gobank/accounts")).bearer_auth(&token).send().await;
    assert!(e.is_err(), "no client certificate must fail the handshake: {e:?}");

    let stranger_pki = fapi_devkit::pki::DevPki::at(&w.dir.path().join("stranger"));
    stranger_pki.generate().unwrap();
    let stranger = client(&w.pki.ca(), Some((&stranger_pki.tpp_cert(), &stranger_pki.tpp_key())), false);
    let e = stranger.get(w.url("/gobank/accounts")).bearer_auth(&token).send().await;
    assert!(e.is_err(), "a certificate from an unknown CA must fail the handshake: {e:?}");
    assert_eq!(w.bank_requests(), 0);
    assert_eq!(w.introspections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bound_to_another_certificate_is_refused() {
    let w = World::start().await;
    let consent = w.consent(&w.other_tpp, "gobank", &GO_BANK_PERMISSIONS, "alice", &["GB-1001"]).await;
    let stolen = w.token(&w.other_tpp, Some(&consent), "openid accounts", None).await;
    assert_eq!(w.get(&w.other_tpp, "/gobank/accounts", &stolen).await.status(), 200);
    let before = w.bank_requests();
    let (status, challenge, id, code) = refusal(w.get(&w.tpp, "/gobank/accounts", &stolen).await).await;
    assert_eq!(status, 401);
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
    assert!(!id.is_empty());
    assert_eq!(code, "UK.OBIE.Header.Invalid");
    assert_eq!(w.bank_requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_get_rfc6750_answers() {
    let w = World::start().await;
    let (consent, token) = w.go_bank_token().await;

    let r = w.tpp.get(w.url("/gobank/accounts")).send().await.unwrap();
    let (status, challenge, _, code) = refusal(r).await;
    assert_eq!(
        (status, challenge.as_str(), code.as_str()),
        (401, r#"Bearer realm="fapi-gateway""#, "UK.OBIE.Header.Missing")
    );

    let r = w.tpp.get(w.url("/gobank/accounts")).header("authorization", "Bearer not a token").send().await.unwrap();
    let (status, challenge, _, _) = refusal(r).await;
    assert_eq!(status, 400);
    assert!(challenge.contains(r#"error="invalid_request""#));

    let r = w.tpp.get(w.url(&format!("/gobank/accounts?access_token={token}"))).send().await.unwrap();
    let (status, challenge, _, _) = refusal(r).await;
    assert_eq!(status, 400);
    assert!(challenge.contains(r#"error="invalid_request""#));

    let (status, challenge, _, _) = refusal(w.get(&w.tpp, "/gobank/accounts", "unknown-token").await).await;
    assert_eq!(status, 401);
    assert!(challenge.contains(r#"error="invalid_token""#));

    let short = w.token(&w.tpp, Some(&consent), "openid accounts", Some(1)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, challenge, _, _) = refusal(w.get(&w.tpp, "/gobank/accounts", &short).await).await;
    assert_eq!(status, 401);
    assert!(challenge.contains(r#"error="invalid_token""#));
    assert_eq!(w.bank_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_permission_and_account_checks_refuse_with_403() {
    let w = World::start().await;
    let consent = w.consent(&w.tpp, "gobank", &["ReadAccountsBasic"], "alice", &["GB-1001"]).await;
    let no_scope = w.token(&w.tpp, Some(&consent), "openid", None).await;
    let (status, challenge, _, _) = refusal(w.get(&w.tpp, "/gobank/accounts", &no_scope).await).await;
    assert_eq!(status, 403);
    assert!(challenge.contains(r#"error="insufficient_scope", scope="accounts""#), "{challenge}");

    let token = w.token(&w.tpp, Some(&consent), "openid accounts", None).await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1001", &token).await.status(), 200);
    let before = w.bank_requests();
    let (status, _, _, code) = refusal(w.get(&w.tpp, "/gobank/accounts/GB-1002", &token).await).await;
    assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.ConsentMismatch"));
    let (status, _, _, code) = refusal(w.get(&w.tpp, "/gobank/accounts/GB-1001/balances", &token).await).await;
    assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.ConsentMismatch"), "no ReadBalances");
    assert_eq!(w.bank_requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_consent_is_refused_once_the_cache_entry_lapses() {
    // Without a revocation notice from the authorization server, the cache lifetime bounds it.
    let w = World::start_with(Options { max_ttl_seconds: 1.0, revocation_hook: false, ..Options::default() }).await;
    let (consent, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    let r = w.tpp.delete(w.as_url(&format!("/consents/{consent}"))).send().await.unwrap();
    assert_eq!(r.status(), 204);
    // Within the cache lifetime the cached answer still stands...
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ...and after it, the revocation is seen.
    let (status, _, _, code) = refusal(w.get(&w.tpp, "/gobank/accounts", &token).await).await;
    assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.InvalidConsentStatus"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_routes_are_denied() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    let (status, _, id, _) = refusal(w.get(&w.tpp, "/gobank/admin", &token).await).await;
    assert_eq!(status, 404);
    assert!(!id.is_empty());
    assert_eq!(refusal(w.get(&w.tpp, "/elsewhere/accounts", &token).await).await.0, 404);
    let r = w.tpp.post(w.url("/gobank/accounts")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(refusal(w.get(&w.tpp, "/gobank/accounts/GB-1001/..%2FGB-1002", &token).await).await.0, 400);
    assert_eq!(w.bank_requests(), 0);
    assert_eq!(w.introspections(), 0, "routes are matched before the token is introspected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_authorization_server_fails_closed() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    w.fixtures.stop_authorization_server();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = w.get(&w.tpp, "/gobank/accounts", &token).await;
    assert_eq!(r.headers()["retry-after"], "3");
    let (status, challenge, id, code) = refusal(r).await;
    assert_eq!((status, code.as_str()), (503, "UK.OBIE.UnexpectedError"));
    assert!(challenge.is_empty() && !id.is_empty());
    assert_eq!(w.bank_requests(), 0, "nothing unverified reaches the bank");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_are_replaced() {
    let w = World::start().await;
    let (consent, token) = w.go_bank_token().await;
    let r = w
        .tpp
        .get(w.url("/gobank/accounts"))
        .bearer_auth(&token)
        .header("x-subject", "bob")
        .header("x-consent-id", "forged")
        .header("x-consent-accounts", "GB-1001,GB-1002,GB-2001")
        .header("x-client-id", "someone-else")
        .header("x-granted-scopes", "everything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(accounts_of(&r.json().await.unwrap()), vec!["GB-1001"]);
    let seen = w.fixtures.go_bank.last_headers().unwrap();
    let all = |n: &str| seen.get_all(n).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(all("x-subject"), vec!["alice"]);
    assert_eq!(all("x-consent-id"), vec![consent]);
    assert_eq!(all("x-consent-accounts"), vec!["GB-1001"]);
    assert_eq!(all("x-client-id"), vec!["financroo"]);
    assert_eq!(all("x-granted-scopes"), vec!["openid accounts"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interaction_ids_are_echoed_generated_and_validated() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    let mine = "6a3e8c43-6a2d-4a3b-9f57-2b7c1d5f0c11";
    let r = w
        .tpp
        .get(w.url("/gobank/accounts"))
        .bearer_auth(&token)
        .header("x-fapi-interaction-id", mine)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-fapi-interaction-id"], mine);
    assert_eq!(w.fixtures.go_bank.last_headers().unwrap()["x-fapi-interaction-id"], mine);

    let r = w.tpp.get(w.url("/gobank/accounts")).header("x-fapi-interaction-id", mine).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["x-fapi-interaction-id"].to_str().unwrap()), (401, mine));

    let r = w
        .tpp
        .get(w.url("/gobank/accounts"))
        .bearer_auth(&token)
        .header("x-fapi-interaction-id", "nope")
        .send()
        .await
        .unwrap();
    let (status, _, id, _) = refusal(r).await;
    assert_eq!(status, 400);
    assert!(uuid::Uuid::try_parse(&id).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_a_new_token_make_one_introspection_call() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    let before = w.introspections();
    let requests = (0..32).map(|_| w.get(&w.tpp, "/gobank/accounts", &token));
    let statuses: Vec<u16> = futures::future::join_all(requests).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(w.introspections() - before, 1);
    // A hit makes no call at all.
    assert_eq!(w.get(&w.tpp, "/gobank/balances", &token).await.status(), 200);
    assert_eq!(w.introspections() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_health() {
    let w = World::start().await;
    let body = reqwest::get(format!("http://{}/healthz", w.admin_addr)).await.unwrap().text().await.unwrap();
    assert_eq!(body, "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_notice_takes_effect_on_the_next_request() {
    let w = World::start().await; // cache lifetime 30 s, revocation notices on
    let (consent, token) = w.go_bank_token().await;
    let (_, other_token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &other_token).await.status(), 200);
    let r = w.tpp.delete(w.as_url(&format!("/consents/{consent}"))).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (status, _, _, code) = refusal(w.get(&w.tpp, "/gobank/accounts", &token).await).await;
    assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.InvalidConsentStatus"));
    // Other consents keep their cache entries.
    let calls = w.introspections();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &other_token).await.status(), 200);
    assert_eq!(w.introspections(), calls);
    assert_eq!(w.metric("fapi_gateway_revocations_total{kind=\"consent\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_must_name_the_tokens_consent() {
    let w = World::start().await;
    let consent = w.consent_of_kind(&w.tpp, "gobank", "domestic-payment-consent", &[], "alice", &["GB-1001"]).await;
    let token = w.token(&w.tpp, Some(&consent), "openid payments", None).await;
    let pay = |body: String| {
        w.tpp
            .post(w.url("/gobank/domestic-payments"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let body = |id: &str| {
        serde_json::json!({"Data": {"ConsentId": id, "Initiation": {"InstructedAmount": {"Amount": "12.50", "Currency": "GBP"}}}, "Risk": {}})
            .to_string()
    };

    let r = pay(body(&consent)).await.unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["Data"]["ConsentId"], consent.as_str());
    assert_eq!(created["Data"]["Initiation"]["InstructedAmount"]["Amount"], "12.50", "the body reached the bank whole");
    let before = w.bank_requests();

    let (status, _, _, code) = refusal(pay(body("consent-someone-else")).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.ConsentMismatch"));
    assert_eq!(refusal(pay("{not json".into()).await.unwrap()).await.0, 400);
    let huge = format!("{{\"Data\": {{\"ConsentId\": \"{consent}\"}}, \"Pad\": \"{}\"}}", "x".repeat(70 * 1024));
    assert_eq!(pay(huge).await.unwrap().status(), 413);
    // A read token cannot pay.
    let (_, read_token) = w.go_bank_token().await;
    let r = w
        .tpp
        .post(w.url("/gobank/domestic-payments"))
        .bearer_auth(&read_token)
        .body(body(&consent))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(w.bank_requests(), before, "no refused payment reached the bank");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_api_asks_its_own_authorization_server() {
    // Go Bank's tokens are introspected at the mock server, Hyperscale Bank's at another
    // (a scripted server that calls every token active and bound to the TPP).
    let other = common::faulty::FaultyServer::start(String::new()).await;
    let servers = format!(
        "[authorization_servers.gobank-as]\n{}\n[authorization_servers.hyperscale-as]\nintrospection_endpoint = \"{}/introspect\"\nclient_id = \"fapi-gateway\"\nclient_secret = \"test-secret\"\n",
        common::mock_server_section("MOCK_AS"),
        other.issuer()
    );
    let options = Options {
        policy_additions: vec![
            ("gobank.toml".into(), "authorization_server = \"gobank-as\"".into()),
            ("hyperscalebank.toml".into(), "authorization_server = \"hyperscale-as\"".into()),
        ],
        servers_toml: Some(servers),
        ..Options::default()
    };
    let w = World::start_with_servers(options).await;
    let cert = fapi_enforcement::client_identity::read_certificates(&w.pki.tpp_cert()).unwrap().remove(0);
    other.bind_to(fapi_enforcement::client_identity::thumbprint(&cert));

    let (_, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    assert_eq!((w.introspections(), other.calls()), (1, 0));
    // The same token string at the other API is another server's business: its own call, its own entry.
    let r = w.get(&w.tpp, "/hyperscalebank/accounts", &token).await;
    assert_eq!(r.status(), 401, "the scripted server's token is meant for Go Bank (aud)");
    assert_eq!((w.introspections(), other.calls()), (1, 1));
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    assert_eq!((w.introspections(), other.calls()), (1, 1), "both cached, separately");
    let text = w.admin("/metrics").await.1;
    assert_eq!(metric_value(&text, r#"fapi_gateway_circuit_state{server="gobank-as"}"#), 0.0);
    assert!(
        text.contains(r#"fapi_gateway_introspection_duration_seconds_count{outcome="ok",server="hyperscale-as"} 1"#),
        "{text}"
    );
}
