//! Which cached entries belong to which consent, and which consents were revoked lately.

use std::collections::HashMap;

use super::TokenKey;

/// The consent ids one entry is indexed under (usually one).
type ConsentIds = Box<[Box<str>]>;

/// Which cached entries belong to which consent, so a revoked consent can be dropped at
/// once. An entry is indexed when it is stored, under every consent id that any API of
/// its authorization server can read from it: which API first saw the token is irrelevant.
#[derive(Default)]
pub(super) struct ConsentIndex {
    by_consent: HashMap<Box<str>, HashMap<TokenKey, u64>>,
    by_key: HashMap<TokenKey, (ConsentIds, u64)>,
    /// Consents revoked lately (revocation number, milliseconds of the cache's clock),
    /// kept for the longest an entry lives: an introspection under way when its consent
    /// was revoked may carry the old status, and is not stored as it is.
    revoked: HashMap<Box<str>, (u64, u64)>,
    /// Revocations so far: a call notes this when it starts.
    pub(super) revocations: u64,
}

impl ConsentIndex {
    pub(super) fn insert(&mut self, consents: &[Box<str>], key: TokenKey, generation: u64) {
        self.remove(key, None);
        if consents.is_empty() {
            return;
        }
        for consent in consents {
            self.by_consent.entry(consent.clone()).or_default().insert(key, generation);
        }
        self.by_key.insert(key, (consents.into(), generation));
    }

    /// Forgets `key`, only if it still stands for `generation` (when given): a removal
    /// reported late must not unindex the entry that replaced it.
    pub(super) fn remove(&mut self, key: TokenKey, generation: Option<u64>) {
        let Some((_, indexed)) = self.by_key.get(&key) else { return };
        if generation.is_some_and(|g| g != *indexed) {
            return;
        }
        let (consents, _) = self.by_key.remove(&key).expect("present");
        for consent in consents.iter() {
            if let Some(keys) = self.by_consent.get_mut(consent) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.by_consent.remove(consent);
                }
            }
        }
    }

    /// The keys of a consent's entries, unindexed; the revocation is remembered from `now`.
    pub(super) fn take(&mut self, consent: &str, now_ms: u64, remember_ms: u64) -> Vec<TokenKey> {
        self.revoked.retain(|_, (_, at)| now_ms.saturating_sub(*at) <= remember_ms);
        self.revocations += 1;
        self.revoked.insert(consent.into(), (self.revocations, now_ms));
        let keys: Vec<TokenKey> = self.by_consent.remove(consent).map(|m| m.into_keys().collect()).unwrap_or_default();
        for k in &keys {
            self.remove(*k, None);
        }
        keys
    }

    /// Whether one of `consents` was revoked after the `since`th revocation.
    pub(super) fn revoked_since(&self, consents: &[Box<str>], since: u64) -> bool {
        consents.iter().any(|c| self.revoked.get(c).is_some_and(|(n, _)| *n > since))
    }

    pub(super) fn clear(&mut self) {
        self.by_consent.clear();
        self.by_key.clear();
    }
}
