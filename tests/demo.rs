//! The demo's TPP journey, and the consent storage page in a real browser (headless
//! Chromium driven by playwright-core, installed by .ci/run).

mod common;

use std::process::Command;

use common::*;

fn journey(w: &World, keep: bool) -> fapi_devkit::tpp::Journey {
    fapi_devkit::tpp::Journey {
        gateway: format!("https://{}", w.gateway_addr),
        authorization_server: format!("https://{}", w.fixtures.authorization_server_addr),
        subject: "alice".into(),
        keep,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tpp_journey_crosses_both_banks_and_ends_refused() {
    let w = World::start().await;
    let report = fapi_devkit::tpp::run(journey(&w, false), &w.pki.dir).await.unwrap();
    let t = &report.transcript;
    assert!(
        t.contains("  GET /gobank/accounts -> 200: GB-1001 (Alice's current account), GB-1002 (Alice's savings)"),
        "{t}"
    );
    assert!(t.contains("  GET /gobank/accounts/GB-1001/balances -> 200: GB-1001 1520.40 GBP"), "{t}");
    assert!(t.contains("  GET /gobank/accounts/GB-1001/transactions -> 200: 2 transactions"), "{t}");
    assert!(t.contains("  GET /hyperscalebank/accounts -> 200: HS-1001 (Alice's everyday account)"), "{t}");
    assert!(t.contains("  GET /gobank/accounts -> 403: UK.OBIE.Resource.InvalidConsentStatus"), "{t}");
    assert!(t.ends_with("journey complete\n"), "{t}");
    assert!(report.kept.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_on_the_consent_page_stops_the_tpp_at_once() {
    let w = World::start().await;
    let report = fapi_devkit::tpp::run(journey(&w, true), &w.pki.dir).await.unwrap();
    let (consent, token) = report.kept.unwrap();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);

    let script = repo_path("tests/browser/consent-page.mjs");
    assert!(
        repo_path("tests/browser/node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/browser` (.ci/run does)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is not installed: `apt-get install chromium` (.ci/run does)"
    );
    let page = format!("http://{}/", w.fixtures.consent_storage_addr.unwrap());
    let screenshot = w.dir.path().join("consent-page.png");
    // The browser blocks: run it off the runtime so the servers keep serving.
    let output = tokio::task::spawn_blocking({
        let (consent, screenshot) = (consent.clone(), screenshot.clone());
        move || {
            Command::new("node")
                .arg(script)
                .args(["--url", &page, "--consent", &consent, "--screenshot"])
                .arg(&screenshot)
                .output()
                .expect("node")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "browser run failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("REVOKED {consent}")), "{stdout}");
    assert!(screenshot.exists());

    // The TPP's next call through the gateway is refused at once.
    let (status, _, _, code) = refusal(w.get(&w.tpp, "/gobank/accounts", &token).await).await;
    assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.InvalidConsentStatus"));
}
