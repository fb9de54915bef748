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
    by_consent: HashMap<Box<str>, Entries>,
    by_key: HashMap<TokenKey, (ConsentIds, u64)>,
    /// Consents revoked lately (revocation number, milliseconds of the cache's clock),
    /// kept for the longest an entry lives: an introspection under way when its consent
    /// was revoked may carry the old status, and is not stored as it is.
    revoked: HashMap<Box<str>, (u64, u64)>,
    /// Revocations so far: a call notes this when it starts.
    pub(super) revocations: u64,
}

/// A consent's entries: almost always one token (a map of one would cost a cached token
/// some 130 bytes more, `benches/RESULTS.md`), a boxed map (the one-token case stays
/// 32 bytes) when a consent has several.
enum Entries {
    One(TokenKey, u64),
    // Boxed on purpose: the map inline would make every `One` 48 bytes instead of 32.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<TokenKey, u64>>),
}

impl Entries {
    fn insert(&mut self, key: TokenKey, generation: u64) {
        match self {
            Entries::One(k, g) if *k == key => *g = generation,
            Entries::One(k, g) => *self = Entries::Many(Box::new(HashMap::from([(*k, *g), (key, generation)]))),
            Entries::Many(map) => {
                map.insert(key, generation);
            }
        }
    }

    /// Removes `key`; whether none is left.
    fn remove(&mut self, key: &TokenKey) -> bool {
        match self {
            Entries::One(k, _) => k == key,
            Entries::Many(map) => {
                map.remove(key);
                map.is_empty()
            }
        }
    }

    fn into_keys(self) -> Vec<TokenKey> {
        match self {
            Entries::One(k, _) => vec![k],
            Entries::Many(map) => (*map).into_keys().collect(),
        }
    }
}

impl ConsentIndex {
    pub(super) fn insert(&mut self, consents: &[Box<str>], key: TokenKey, generation: u64) {
        self.remove(key, None);
        if consents.is_empty() {
            return;
        }
        for consent in consents {
            match self.by_consent.get_mut(consent) {
                Some(entries) => entries.insert(key, generation),
                None => {
                    self.by_consent.insert(consent.clone(), Entries::One(key, generation));
                }
            }
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
            if self.by_consent.get_mut(consent).is_some_and(|entries| entries.remove(&key)) {
                self.by_consent.remove(consent);
            }
        }
    }

    /// The keys of a consent's entries, unindexed; the revocation is remembered from `now`.
    pub(super) fn take(&mut self, consent: &str, now_ms: u64, remember_ms: u64) -> Vec<TokenKey> {
        self.revoked.retain(|_, (_, at)| now_ms.saturating_sub(*at) <= remember_ms);
        self.revocations += 1;
        self.revoked.insert(consent.into(), (self.revocations, now_ms));
        let keys: Vec<TokenKey> = self.by_consent.remove(consent).map(Entries::into_keys).unwrap_or_default();
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
