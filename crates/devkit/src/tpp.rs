//! The scripted TPP journey ("Financroo"): for each bank, a consent, the customer's
//! approval, a certificate-bound token and the account, balance and transaction calls
//! through the gateway; then one consent is revoked and the next call must be refused.
//! What the README's walk-through does by hand, and what a test runs.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::pki::DevPki;

/// Where the journey goes.
pub struct Journey {
    pub gateway: String,
    pub authorization_server: String,
    pub subject: String,
    /// Leave one Go Bank consent authorised (for the consent storage page).
    pub keep: bool,
}

/// What the journey did, as printed, and the kept consent and token if asked for.
pub struct JourneyReport {
    pub transcript: String,
    pub kept: Option<(String, String)>,
}

const BANKS: [(&str, &str, &[&str], &[&str]); 2] = [
    (
        "gobank",
        "Go Bank",
        &[
            "ReadAccountsBasic",
            "ReadBalances",
            "ReadTransactionsBasic",
            "ReadTransactionsCredits",
            "ReadTransactionsDebits",
        ],
        &["GB-1001", "GB-1002"],
    ),
    ("hyperscalebank", "Hyperscale Bank", &[], &["HS-1001"]),
];

struct Tpp {
    client: reqwest::Client,
    journey: Journey,
}

fn fail(step: &str, e: impl std::fmt::Display) -> String {
    format!("{step}: {e}")
}

impl Tpp {
    async fn json(&self, step: &str, request: reqwest::RequestBuilder) -> Result<Value, String> {
        let r = request.send().await.map_err(|e| fail(step, e))?;
        let status = r.status();
        let body = r.text().await.map_err(|e| fail(step, e))?;
        if !status.is_success() {
            return Err(fail(step, format!("HTTP {status}: {body}")));
        }
        serde_json::from_str(&body).map_err(|e| fail(step, e))
    }

    async fn consent(&self, bank: &str, permissions: &[&str], accounts: &[&str]) -> Result<String, String> {
        let a = &self.journey.authorization_server;
        let created = self
            .json(
                "create consent",
                self.client.post(format!("{a}/consents")).json(&json!({"bank": bank, "permissions": permissions})),
            )
            .await?;
        let id = created["ConsentId"].as_str().ok_or("no ConsentId")?.to_string();
        let approval = json!({"subject": self.journey.subject, "accounts": accounts});
        self.json("authorise consent", self.client.post(format!("{a}/consents/{id}/authorise")).json(&approval))
            .await?;
        Ok(id)
    }

    async fn token(&self, consent: &str, scope: &str) -> Result<String, String> {
        let a = &self.journey.authorization_server;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", "financroo"),
            ("scope", scope),
            ("consent_id", consent),
        ];
        let body = self.json("token", self.client.post(format!("{a}/token")).form(&form)).await?;
        Ok(body["access_token"].as_str().ok_or("no access_token")?.to_string())
    }

    /// GET through the gateway: (status, body).
    async fn get(&self, path: &str, token: &str) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.journey.gateway);
        let r = self.client.get(&url).bearer_auth(token).send().await.map_err(|e| fail(path, e))?;
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

fn summary(body: &Value) -> String {
    let data = &body["Data"];
    if let Some(accounts) = data["Account"].as_array() {
        return accounts
            .iter()
            .map(|a| format!("{} ({})", a["AccountId"].as_str().unwrap_or(""), a["Nickname"].as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(", ");
    }
    if let Some(balances) = data["Balance"].as_array() {
        return balances
            .iter()
            .map(|b| {
                format!(
                    "{} {} {}",
                    b["AccountId"].as_str().unwrap_or(""),
                    b["Amount"]["Amount"].as_str().unwrap_or(""),
                    b["Amount"]["Currency"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
    }
    if let Some(txs) = data["Transaction"].as_array() {
        return format!("{} transactions", txs.len());
    }
    let error = body["Errors"][0]["ErrorCode"].as_str().unwrap_or("");
    format!("{error} {}", body["Message"].as_str().unwrap_or("")).trim().to_string()
}

/// Runs the journey with the TPP certificate of `certs` (a dev PKI folder).
pub async fn run(journey: Journey, certs: &Path) -> Result<JourneyReport, String> {
    let pki = DevPki::at(certs);
    let read = |p: std::path::PathBuf| std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let ca = reqwest::Certificate::from_pem(&read(pki.ca())?).map_err(|e| e.to_string())?;
    let mut pem = read(pki.tpp_cert())?;
    pem.extend(read(pki.tpp_key())?);
    let identity = reqwest::Identity::from_pem(&pem).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let tpp = Tpp { client, journey };
    let mut out = String::new();
    let mut go_bank = None;
    for (bank, name, permissions, accounts) in BANKS {
        let consent = tpp.consent(bank, permissions, accounts).await?;
        let token = tpp.token(&consent, "openid accounts").await?;
        let _ = writeln!(
            out,
            "{name}: consent {consent} authorised by {} for {}",
            tpp.journey.subject,
            accounts.join(", ")
        );
        let first = accounts[0];
        for path in [
            format!("/{bank}/accounts"),
            format!("/{bank}/accounts/{first}/balances"),
            format!("/{bank}/accounts/{first}/transactions"),
        ] {
            let (status, body) = tpp.get(&path, &token).await?;
            let _ = writeln!(out, "  GET {path} -> {status}: {}", summary(&body));
            if status != 200 {
                return Err(format!("{out}GET {path} was refused ({status})"));
            }
        }
        if bank == "gobank" {
            go_bank = Some((consent, token));
        }
    }
    let (consent, token) = go_bank.expect("Go Bank is in the journey");
    let a = &tpp.journey.authorization_server;
    let _ = writeln!(out, "Revoking the Go Bank consent {consent}");
    let r = tpp.client.delete(format!("{a}/consents/{consent}")).send().await.map_err(|e| fail("revoke", e))?;
    if !r.status().is_success() {
        return Err(format!("{out}revocation failed: HTTP {}", r.status()));
    }
    let (status, body) = tpp.get("/gobank/accounts", &token).await?;
    let _ = writeln!(out, "  GET /gobank/accounts -> {status}: {}", summary(&body));
    if status != 403 {
        return Err(format!("{out}the call after revocation was not refused ({status})"));
    }
    let kept = if tpp.journey.keep {
        let (_, _, permissions, accounts) = BANKS[0];
        let consent = tpp.consent("gobank", permissions, accounts).await?;
        let token = tpp.token(&consent, "openid accounts").await?;
        let _ = writeln!(out, "CONSENT {consent}\nTOKEN {token}");
        Some((consent, token))
    } else {
        None
    };
    let _ = writeln!(out, "journey complete");
    Ok(JourneyReport { transcript: out, kept })
}
