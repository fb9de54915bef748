//! The built-in profiles, one row each: where that spec's authorization server puts the
//! consent (the claim mapping), its ready-made routes, its permission vocabulary and its
//! kinds of consent. A new profile is a new row here and a routes file in `profiles/`.

use super::claims::{ClaimMapping, ClaimPath};

/// Where a profile's authorization server puts the consent (claim path texts).
pub struct Mapping {
    /// The consent id.
    pub consent_id: &'static str,
    /// The consent's kind; `None` where the spec has one kind.
    pub consent_type: Option<&'static str>,
    /// The consent's status; `None` where the spec has none (CDR).
    pub status: Option<&'static str>,
    /// Statuses that grant access.
    pub granting_status: &'static [&'static str],
    /// The consent's permissions; `None` where they are scopes.
    pub permissions: Option<&'static str>,
    /// The ids of the accounts the consent grants.
    pub accounts: &'static str,
    /// The consent's expiry; `None` where the response carries none.
    pub expiration: Option<&'static str>,
}

/// One open-finance specification as the gateway knows it.
pub struct Profile {
    /// The name policy files give (`profile = "obuk"`).
    pub name: &'static str,
    /// Where its authorization server puts the consent.
    pub mapping: Mapping,
    /// Its ready-made routes (`profile_routes = true`), in the policy file format.
    pub routes: &'static str,
    /// Every permission of a spec with a permissions claim (route permissions are checked
    /// against it); `None` where permissions are scopes.
    pub permissions: Option<&'static [&'static str]>,
    /// Every kind of consent of a spec with a kind claim; `None` where it has one kind.
    pub consent_kinds: Option<&'static [&'static str]>,
    /// The limit on account-information requests without the customer present, where the
    /// spec's jurisdiction has one (an API switches it on with `[unattended_access]`).
    pub unattended_access: Option<UnattendedRule>,
}

/// PSD2 RTS Art. 36(5) as a profile knows it: which consents grant account information,
/// and the regulation's numbers (a bank may agree others with the TPP).
pub struct UnattendedRule {
    /// Routes granted by these kinds of consent count.
    pub consent_kinds: &'static [&'static str],
    /// Requests without the customer per window (RTS: four).
    pub max_requests: u32,
    /// The window (RTS: 24 hours).
    pub window_seconds: u64,
}

impl Profile {
    /// The built-in profile named `name`.
    pub fn named(name: &str) -> Option<&'static Profile> {
        PROFILES.iter().find(|p| p.name == name)
    }

    /// The names of every built-in profile.
    pub fn names() -> Vec<&'static str> {
        PROFILES.iter().map(|p| p.name).collect()
    }

    /// The claim mapping, as a policy file starts from it.
    pub fn claim_mapping(&self) -> ClaimMapping {
        let p = |s: &str| ClaimPath::parse(s).expect("built-in claim paths are valid");
        let m = &self.mapping;
        ClaimMapping {
            consent_id: p(m.consent_id),
            consent_type: m.consent_type.map(p),
            status: m.status.map(p),
            granting_status: m.granting_status.iter().map(|s| s.to_string()).collect(),
            permissions: m.permissions.map(p),
            accounts: Some(p(m.accounts)),
            expiration: m.expiration.map(p),
        }
    }
}

/// The built-in profiles.
pub static PROFILES: [Profile; 5] = [
    // Open Banking UK 3.1: account access, payments, funds confirmation, VRP.
    Profile {
        name: "obuk",
        mapping: Mapping {
            consent_id: "ConsentId",
            consent_type: Some("ConsentType"),
            status: Some("Status"),
            granting_status: &["Authorised"],
            permissions: Some("Permissions"),
            accounts: "AccountIDs",
            expiration: Some("ExpirationDateTime"),
        },
        routes: include_str!("profiles/obuk.toml"),
        permissions: Some(&[
            "ReadAccountsBasic",
            "ReadAccountsDetail",
            "ReadBalances",
            "ReadBeneficiariesBasic",
            "ReadBeneficiariesDetail",
            "ReadDirectDebits",
            "ReadOffers",
            "ReadPAN",
            "ReadParty",
            "ReadPartyPSU",
            "ReadProducts",
            "ReadScheduledPaymentsBasic",
            "ReadScheduledPaymentsDetail",
            "ReadStandingOrdersBasic",
            "ReadStandingOrdersDetail",
            "ReadStatementsBasic",
            "ReadStatementsDetail",
            "ReadTransactionsBasic",
            "ReadTransactionsCredits",
            "ReadTransactionsDebits",
            "ReadTransactionsDetail",
        ]),
        // The consent resources of the Read/Write, Funds Confirmation and VRP APIs.
        consent_kinds: Some(&[
            "account-access-consent",
            "domestic-payment-consent",
            "domestic-scheduled-payment-consent",
            "domestic-standing-order-consent",
            "international-payment-consent",
            "international-scheduled-payment-consent",
            "international-standing-order-consent",
            "file-payment-consent",
            "funds-confirmation-consent",
            "domestic-vrp-consent",
        ]),
        unattended_access: Some(UnattendedRule {
            consent_kinds: &["account-access-consent"],
            max_requests: 4,
            window_seconds: 86_400,
        }),
    },
    // Open Finance Brasil.
    Profile {
        name: "obbr",
        mapping: Mapping {
            consent_id: "consentId",
            consent_type: Some("consentType"),
            status: Some("status"),
            granting_status: &["AUTHORISED"],
            permissions: Some("permissions"),
            accounts: "AccountIDs",
            expiration: Some("expirationDateTime"),
        },
        routes: include_str!("profiles/obbr.toml"),
        permissions: Some(&[
            "ACCOUNTS_READ",
            "ACCOUNTS_BALANCES_READ",
            "ACCOUNTS_TRANSACTIONS_READ",
            "ACCOUNTS_OVERDRAFT_LIMITS_READ",
            "CREDIT_CARDS_ACCOUNTS_READ",
            "CREDIT_CARDS_ACCOUNTS_BILLS_READ",
            "CREDIT_CARDS_ACCOUNTS_BILLS_TRANSACTIONS_READ",
            "CREDIT_CARDS_ACCOUNTS_LIMITS_READ",
            "CREDIT_CARDS_ACCOUNTS_TRANSACTIONS_READ",
            "CUSTOMERS_PERSONAL_IDENTIFICATIONS_READ",
            "CUSTOMERS_PERSONAL_ADITTIONALINFO_READ",
            "CUSTOMERS_BUSINESS_IDENTIFICATIONS_READ",
            "CUSTOMERS_BUSINESS_ADITTIONALINFO_READ",
            "FINANCINGS_READ",
            "INVOICE_FINANCINGS_READ",
            "LOANS_READ",
            "UNARRANGED_ACCOUNTS_OVERDRAFT_READ",
            "RESOURCES_READ",
        ]),
        // Data sharing (`/consents`), payments (`/payments/.../consents`), automatic payments.
        consent_kinds: Some(&["data-sharing-consent", "payment-consent", "recurring-payment-consent"]),
        unattended_access: None,
    },
    // Australia's Consumer Data Right: permissions are scopes, one kind of arrangement.
    Profile {
        name: "cdr",
        mapping: Mapping {
            consent_id: "cdr_arrangement_id",
            consent_type: None,
            status: None,
            granting_status: &[],
            permissions: None,
            accounts: "AccountIDs",
            expiration: None,
        },
        routes: include_str!("profiles/cdr.toml"),
        permissions: None,
        consent_kinds: None,
        unattended_access: None,
    },
    // US FDX 6: permissions are scopes.
    Profile {
        name: "fdx",
        mapping: Mapping {
            consent_id: "fdx_consent.id",
            consent_type: None,
            status: Some("fdx_consent.status"),
            granting_status: &["ACTIVE"],
            permissions: None,
            accounts: "fdx_consent.resources[].id",
            expiration: Some("fdx_consent.expirationTime"),
        },
        routes: include_str!("profiles/fdx.toml"),
        permissions: None,
        consent_kinds: None,
        unattended_access: None,
    },
    // The quickstart's generic bank: consent storage's shape, permissions are scopes.
    Profile {
        name: "generic",
        mapping: Mapping {
            consent_id: "consent_id",
            consent_type: Some("consent_type"),
            status: Some("status"),
            granting_status: &["authorized"],
            permissions: None,
            accounts: "account_ids",
            expiration: None,
        },
        routes: include_str!("profiles/generic.toml"),
        permissions: None,
        consent_kinds: None,
        unattended_access: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_maps_and_routes() {
        for p in &PROFILES {
            let _ = p.claim_mapping();
            assert!(p.routes.contains("[[route]]"), "{}", p.name);
            assert!(Profile::named(p.name).is_some());
        }
        assert!(Profile::named("nope").is_none());
    }
}
