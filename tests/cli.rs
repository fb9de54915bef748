//! The `fapi-gateway` binary's `certs` and `check` subcommands.

use std::path::Path;
use std::process::Command;

fn gateway(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fapi-gateway")).args(args).current_dir(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// A copy of the repository's gateway.toml and policies with a fresh PKI.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo("gateway.toml"), dir.path().join("gateway.toml")).unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    for entry in std::fs::read_dir(repo("policies")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join("policies").join(entry.file_name())).unwrap();
    }
    let (ok, out) = gateway(&["certs", "--out", "certs"], dir.path());
    assert!(ok, "{out}");
    dir
}

#[test]
fn certs_writes_a_complete_dev_pki() {
    let dir = workspace();
    for f in [
        "ca.pem",
        "ca.key",
        "gateway.pem",
        "gateway.key",
        "tpp.pem",
        "tpp.key",
        "other-tpp.pem",
        "other-tpp.key",
        "gateway-client.pem",
        "gateway-client.key",
    ] {
        let text = std::fs::read_to_string(dir.path().join("certs").join(f)).unwrap();
        assert!(text.starts_with("-----BEGIN"), "{f}");
    }
    // Secrets of this installation: random, readable by their owner only.
    let other = workspace();
    for f in ["admin-secret", "introspection-secret"] {
        let path = dir.path().join("certs").join(f);
        let secret = std::fs::read_to_string(&path).unwrap();
        assert_eq!(secret.trim().len(), 48, "{f}");
        assert_ne!(secret, std::fs::read_to_string(other.path().join("certs").join(f)).unwrap(), "{f}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o077, 0, "{f}");
    }
}

#[test]
fn check_refuses_published_secrets_however_they_are_given() {
    let dir = workspace();
    let config = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    // The values this repository once shipped, inline, from a file and from the environment.
    std::fs::write(dir.path().join("published"), "dev-gateway-secret\n").unwrap();
    let cases = [
        config.replace("bearer_secret_file = \"certs/admin-secret\"", "bearer_secret = \"dev-admin-secret-change-me\""),
        config.replace("client_secret_file = \"certs/introspection-secret\"", "client_secret_file = \"published\""),
        config.replace(
            "client_secret_file = \"certs/introspection-secret\"",
            "client_secret = \"${FAPI_TEST_PUBLISHED}\"",
        ),
    ];
    for case in cases {
        std::fs::write(dir.path().join("gateway.toml"), case).unwrap();
        for command in ["check", "run"] {
            let out = Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
                .args([command, "--config", "gateway.toml"])
                .env("FAPI_TEST_PUBLISHED", "dev-gateway-secret")
                .current_dir(dir.path())
                .output()
                .unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.status.code(), Some(1), "{command}: {text}");
            assert!(text.contains("is a development value published with fapi-gateway"), "{command}: {text}");
        }
    }
    // From the environment, a secret of one's own is fine.
    std::fs::write(
        dir.path().join("gateway.toml"),
        config.replace("client_secret_file = \"certs/introspection-secret\"", "client_secret = \"${FAPI_TEST_OWN}\""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
        .args(["check", "--config", "gateway.toml"])
        .env("FAPI_TEST_OWN", "a-secret-of-our-own-42")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn check_refuses_dpop_routes_without_a_known_url_and_warns_on_shared_servers_without_audiences() {
    let dir = workspace();
    let hs = std::fs::read_to_string(dir.path().join("policies/hyperscalebank.toml")).unwrap();
    let unbound = hs.replace("audiences = [\"https://api.hyperscalebank.example\"]", "");
    std::fs::write(
        dir.path().join("policies/hyperscalebank.toml"),
        format!("{unbound}\n[[route]]\npath = \"/dpop\"\nscopes = [\"accounts\"]\nbinding = \"dpop\"\n"),
    )
    .unwrap();
    let (ok, out) = gateway(&["check", "--config", "gateway.toml"], dir.path());
    assert!(!ok, "{out}");
    assert!(
        out.contains("policies/hyperscalebank.toml:38: route `/dpop` takes DPoP proofs")
            && out.contains("set dpop.external_url or listener.server_names"),
        "{out}"
    );
    let config = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    for fix in ["[dpop]\nexternal_url = \"https://api.bank.example\"\n", ""] {
        let fixed = if fix.is_empty() {
            config.replace("http2 = true", "http2 = true\nserver_names = [\"api.bank.example\", \"127.0.0.1:8443\"]")
        } else {
            format!("{config}\n{fix}")
        };
        std::fs::write(dir.path().join("gateway.toml"), fixed).unwrap();
        let (ok, out) = gateway(&["check", "--config", "gateway.toml"], dir.path());
        assert!(ok, "{out}");
        assert!(
            out.contains(
                "API `hyperscalebank` shares authorization server `demo-as` with gobank but sets no [api] audiences"
            ),
            "{out}"
        );
        assert!(!out.contains("API `gobank` shares"), "{out}");
    }
}

#[test]
fn check_accepts_the_example_configuration() {
    let dir = workspace();
    let (ok, out) = gateway(&["check", "--config", "gateway.toml"], dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("gateway.toml: ok (2 APIs, 41 routes"), "{out}");
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn check_lists_every_problem_with_file_and_line() {
    let dir = workspace();
    let config = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    std::fs::write(dir.path().join("gateway.toml"), config.replace("127.0.0.1:8443", "localhost-8443")).unwrap();
    let gobank = std::fs::read_to_string(dir.path().join("policies/gobank.toml")).unwrap();
    std::fs::write(dir.path().join("policies/gobank.toml"), gobank.replace("profile = \"obuk\"", "profile = \"obzz\""))
        .unwrap();
    let hs = std::fs::read_to_string(dir.path().join("policies/hyperscalebank.toml")).unwrap();
    std::fs::write(
        dir.path().join("policies/hyperscalebank.toml"),
        hs.replace("path = \"/balances\"", "path = \"/balances/{\""),
    )
    .unwrap();

    let (ok, out) = gateway(&["check", "--config", "gateway.toml"], dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("gateway.toml:7: `localhost-8443` is not an address"), "{out}");
    assert!(out.contains("policies/gobank.toml:11: unknown profile `obzz`"), "{out}");
    assert!(out.contains("policies/hyperscalebank.toml:31: path `/balances/{`"), "{out}");
    assert!(out.contains("3 problems found"), "{out}");
}

#[test]
fn check_reports_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = gateway(&["check", "--config", "nope.toml"], dir.path());
    assert!(!ok);
    assert!(out.contains("nope.toml: cannot read"), "{out}");
}

#[test]
fn explain_shows_each_check_and_the_decision() {
    let dir = workspace();
    let claims = serde_json::json!({
        "active": true, "scope": "openid accounts", "client_id": "financroo", "sub": "alice",
        "cnf": {"x5t#S256": "abc"}, "aud": "https://api.gobank.example",
        "ConsentId": "c-1", "ConsentType": "account-access-consent", "Status": "Authorised",
        "Permissions": ["ReadAccountsBasic", "ReadBalances"], "AccountIDs": ["GB-1001"]
    });
    std::fs::write(dir.path().join("claims.json"), claims.to_string()).unwrap();

    let (ok, out) = gateway(
        &["explain", "--config", "gateway.toml", "--claims", "claims.json", "GET /gobank/accounts/GB-1001/balances"],
        dir.path(),
    );
    assert!(ok, "{out}");
    assert!(out.contains("route: API `gobank`, GET /accounts/{AccountId}/balances (<built-in profile obuk>:"), "{out}");
    assert!(out.contains("  pass  consent permissions: granted [ReadAccountsBasic ReadBalances]"), "{out}");
    assert!(out.contains("  pass  account granted: GB-1001 is in [GB-1001]"), "{out}");
    assert!(out.contains("decision: allowed; forwarded with consent \"c-1\""), "{out}");

    let out = Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
        .args([
            "explain",
            "--config",
            "gateway.toml",
            "--claims",
            "claims.json",
            "--certificate",
            "certs/other-tpp.pem",
            "GET /gobank/accounts/GB-1002/transactions",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("  FAIL  certificate binding (RFC 8705): 401 UK.OBIE.Header.Invalid (cert_mismatch)"),
        "{text}"
    );
    assert!(
        text.contains("  FAIL  consent permissions: 403 UK.OBIE.Resource.ConsentMismatch (permission_missing)"),
        "{text}"
    );
    assert!(text.contains("  FAIL  account granted:"), "{text}");
    assert!(text.contains("decision: refused, 401 UK.OBIE.Header.Invalid (cert_mismatch)"), "{text}");

    let (ok, out) =
        gateway(&["explain", "--config", "gateway.toml", "--claims", "claims.json", "GET /elsewhere"], dir.path());
    assert!(!ok);
    assert!(out.contains("route: none") && out.contains("404 UK.OBIE.Resource.NotFound (no_route)"), "{out}");
}

#[test]
fn check_warns_about_weaker_settings() {
    let dir = workspace();
    let config = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    std::fs::write(
        dir.path().join("gateway.toml"),
        config.replace("http2 = true", "http2 = true\ntls_profile = \"compatible\""),
    )
    .unwrap();
    let mut hs = std::fs::read_to_string(dir.path().join("policies/hyperscalebank.toml")).unwrap();
    hs.push_str("\n[[route]]\npath = \"/status\"\nconsent = false\nbinding = \"none\"\n");
    std::fs::write(dir.path().join("policies/hyperscalebank.toml"), hs).unwrap();
    let (ok, out) = gateway(&["check", "--config", "gateway.toml"], dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("warning: gateway.toml:12: listener.tls_profile `compatible` allows TLS 1.2 suites"), "{out}");
    assert!(out.contains("policies/hyperscalebank.toml:38: route `/status`: binding = \"none\""), "{out}");
}

#[test]
fn check_reports_policy_problems_despite_a_broken_gateway_toml_and_says_what_each_api_checks() {
    let dir = workspace();
    let (ok, out) = gateway(&["check", "--config", "gateway.toml"], dir.path());
    assert!(ok, "{out}");
    assert!(
        out.contains("  API `gobank` (/gobank, ")
            && out.contains("consent id `ConsentId`; kind `ConsentType`; status `Status` in [Authorised]"),
        "{out}"
    );
    let config = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    std::fs::write(dir.path().join("gateway.toml"), config.replacen("[listener]", "[listener", 1)).unwrap();
    let hs = std::fs::read_to_string(dir.path().join("policies/hyperscalebank.toml")).unwrap();
    let hs = hs.replace("path = \"/balances\"", "path = \"/balances/*\"\ncolour = 1");
    std::fs::write(dir.path().join("policies/hyperscalebank.toml"), hs).unwrap();
    let (ok, out) = gateway(&["check", "--config", "gateway.toml"], dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("gateway.toml:"), "{out}");
    assert!(out.contains("policies/hyperscalebank.toml:32: unknown field `colour`"), "{out}");
    assert!(out.contains("2 problems found"), "{out}");
}
