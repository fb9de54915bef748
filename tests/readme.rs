//! The README documents what operators see: every `decision` label of
//! `fapi_gateway_requests_total`.

use fapi_enforcement::refusal::{ConsentRefusal, Refusal};

#[test]
fn the_readme_lists_every_decision_label() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let row = readme.lines().find(|l| l.starts_with("| `fapi_gateway_requests_total`")).expect("the metric's row");
    let consent = |c| Refusal::Consent(c);
    let refusals = [
        Refusal::MissingCredentials,
        Refusal::InvalidRequest { description: "d", field: "f" },
        Refusal::InvalidToken { description: "d" },
        Refusal::CertificateMismatch,
        Refusal::InvalidDpopProof { description: "d".into() },
        Refusal::UseDpopNonce { nonce: "n".into() },
        Refusal::DpopMismatch,
        Refusal::InsufficientScope { scope: "s".into() },
        Refusal::ClientNotAllowed { client_id: "c".into() },
        Refusal::InsufficientAcr { acr: "a".into(), required: "r".into() },
        Refusal::BodyTooLarge,
        Refusal::HeadersTooLarge,
        consent(ConsentRefusal::Missing { claim: "c".into() }),
        consent(ConsentRefusal::ClaimMissing { element: "status", claim: "c".into() }),
        consent(ConsentRefusal::Status { status: "s".into() }),
        consent(ConsentRefusal::Expired),
        consent(ConsentRefusal::Permission { needed: "p".into() }),
        consent(ConsentRefusal::AccountNotGranted { account: "a".into() }),
        consent(ConsentRefusal::Mismatch),
        consent(ConsentRefusal::Kind { kind: "k".into(), needed: "n".into() }),
        Refusal::NoRoute { in_api: true },
        Refusal::MethodNotAllowed { allow: "GET".into() },
        Refusal::MisdirectedRequest,
        Refusal::AuthorizationServerUnavailable { retry_after_seconds: 1 },
        Refusal::UpstreamUnavailable,
    ];
    let labels = refusals.iter().map(Refusal::reason).chain(["allowed", "none", "untrusted_proxy"]);
    for label in labels {
        assert!(row.contains(&format!("`{label}`")), "README's decision labels lack `{label}`");
    }
}
