//! The compact claim store: what the cache keeps of an introspection response's
//! extension claims, with strings and lists shared between cached tokens.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::Value;

/// A JSON tree as read, walked by claim paths. Implemented for `serde_json::Value` (request
/// bodies) and for [`Claim`] (cached introspection responses).
pub trait Node: Sized {
    /// The object member `name`; `None` when absent or not an object.
    fn member(&self, name: &str) -> Option<&Self>;
    /// The elements, if this is an array.
    fn items(&self) -> Option<&[Self]>;
    /// The string, if this is a string.
    fn text(&self) -> Option<&str>;
    /// The number, if this is one that fits a `u64` (seconds since the epoch, say).
    fn number(&self) -> Option<u64>;
}

impl Node for Value {
    fn member(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
    fn items(&self) -> Option<&[Value]> {
        self.as_array().map(Vec::as_slice)
    }
    fn text(&self) -> Option<&str> {
        self.as_str()
    }
    fn number(&self) -> Option<u64> {
        self.as_u64()
    }
}

/// A compact, read-only JSON tree for cached introspection responses: objects are sorted
/// boxed slices rather than B-tree maps, and strings are shared between tokens (member
/// names, statuses, permissions, client ids, thumbprints repeat across a cache of
/// thousands), so a cached token costs a fraction of the memory of a `Value`.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// JSON `null`.
    Null,
    /// A JSON boolean.
    Bool(bool),
    /// A JSON number, as serde_json reads it.
    Number(serde_json::Number),
    /// A JSON string, shared.
    String(Arc<str>),
    /// Arrays too are shared (permission lists repeat across a consent's tokens).
    Array(Arc<[Claim]>),
    /// A JSON object, its members sorted by name for binary search.
    Object(Box<[(Arc<str>, Claim)]>),
}

/// Shards of the sharing pools: a miss locks one shard for one string, list or array,
/// so misses for many tokens (of every authorization server) do not wait on each other.
const SHARDS: usize = 16;

fn shard_of(key: &str) -> usize {
    use std::hash::BuildHasher;
    static SEED: LazyLock<std::collections::hash_map::RandomState> = LazyLock::new(Default::default);
    SEED.hash_one(key) as usize % SHARDS
}

/// Shared values by text. Values no token holds any more are dropped when a shard has
/// doubled since its last sweep, so the pool stays proportional to what is cached.
struct Pool<V> {
    shards: [Mutex<PoolShard<V>>; SHARDS],
}

struct PoolShard<V> {
    map: HashMap<Box<str>, V>,
    swept_at: usize,
}

impl<V: Clone> Pool<V> {
    fn new() -> Pool<V> {
        Pool { shards: std::array::from_fn(|_| Mutex::new(PoolShard { map: HashMap::new(), swept_at: 256 })) }
    }

    /// The shared value for `key`; `make` runs without the shard's lock (it may share
    /// values itself), and `held` tells a value some token still holds.
    fn get_or_make(&self, key: &str, make: impl FnOnce() -> V, held: impl Fn(&V) -> bool) -> V {
        let shard = &self.shards[shard_of(key)];
        if let Some(found) = lock(shard).map.get(key) {
            return found.clone();
        }
        let made = make();
        let mut shard = lock(shard);
        if let Some(found) = shard.map.get(key) {
            return found.clone();
        }
        if shard.map.len() >= shard.swept_at * 2 {
            shard.map.retain(|_, v| held(v));
            shard.swept_at = shard.map.len().max(256);
        }
        shard.map.insert(key.into(), made.clone());
        made
    }
}

/// A lock that a panic elsewhere does not make unusable: the maps stay valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shared strings (a set: the key is the value).
struct StringPool {
    shards: [Mutex<(HashSet<Arc<str>>, usize)>; SHARDS],
}

impl StringPool {
    fn share(&self, s: &str) -> Arc<str> {
        let mut shard = lock(&self.shards[shard_of(s)]);
        if let Some(found) = shard.0.get(s) {
            return found.clone();
        }
        let (set, swept_at) = &mut *shard;
        if set.len() >= *swept_at * 2 {
            set.retain(|a| Arc::strong_count(a) > 1);
            *swept_at = set.len().max(256);
        }
        let new: Arc<str> = s.into();
        set.insert(new.clone());
        new
    }
}

static STRINGS: LazyLock<StringPool> =
    LazyLock::new(|| StringPool { shards: std::array::from_fn(|_| Mutex::new((HashSet::new(), 256))) });
/// Arrays by their JSON text (permission lists repeat across a consent's tokens).
static ARRAYS: LazyLock<Pool<Arc<[Claim]>>> = LazyLock::new(Pool::new);
/// Space-separated lists (scopes) by their text.
static LISTS: LazyLock<Pool<Arc<[Arc<str>]>>> = LazyLock::new(Pool::new);
/// One-string lists (an `aud` that is a string), by their string.
static SINGLES: LazyLock<Pool<Arc<[Arc<str>]>>> = LazyLock::new(Pool::new);
/// The empty list: `Arc::from([])` would allocate its counts (32 bytes) for every token.
static EMPTY: LazyLock<Arc<[Arc<str>]>> = LazyLock::new(|| Arc::from([]));

fn shared_array(items: &[Value]) -> Arc<[Claim]> {
    let text = serde_json::to_string(items).unwrap_or_default();
    ARRAYS.get_or_make(&text, || items.iter().map(Claim::compact).collect(), |a| Arc::strong_count(a) > 1)
}

impl Claim {
    fn compact(v: &Value) -> Claim {
        match v {
            Value::Null => Claim::Null,
            Value::Bool(b) => Claim::Bool(*b),
            Value::Number(n) => Claim::Number(n.clone()),
            Value::String(s) => Claim::String(share(s)),
            Value::Array(items) => Claim::Array(shared_array(items)),
            // serde_json's map iterates in key order: the slice is sorted for binary search.
            Value::Object(map) => Claim::Object(map.iter().map(|(k, v)| (share(k), Claim::compact(v))).collect()),
        }
    }

    /// An object's members but the `skipped` ones, compact.
    pub fn compact_except(v: &Value, skipped: &[&str]) -> Claim {
        match v {
            Value::Object(map) => Claim::Object(
                map.iter()
                    .filter(|(k, _)| !skipped.contains(&k.as_str()))
                    .map(|(k, v)| (share(k), Claim::compact(v)))
                    .collect(),
            ),
            other => Claim::compact(other),
        }
    }
}

impl From<&Value> for Claim {
    fn from(v: &Value) -> Claim {
        Claim::compact(v)
    }
}

/// The words of a space-separated list (a `scope`), shared with every other holder of the
/// same list.
pub fn share_list(text: &str) -> Arc<[Arc<str>]> {
    LISTS.get_or_make(text, || text.split_whitespace().map(share).collect(), |l| Arc::strong_count(l) > 1)
}

/// The list of one string `s` (an `aud` given as a string), shared.
pub fn share_single(s: &str) -> Arc<[Arc<str>]> {
    SINGLES.get_or_make(s, || Arc::from([share(s)]), |l| Arc::strong_count(l) > 1)
}

/// The empty list, shared.
pub fn empty_list() -> Arc<[Arc<str>]> {
    EMPTY.clone()
}

/// A string shared with every other holder of the same text.
pub fn share(s: &str) -> Arc<str> {
    STRINGS.share(s)
}

impl Claim {
    /// The same JSON as a `serde_json::Value` (for display).
    pub fn to_value(&self) -> Value {
        match self {
            Claim::Null => Value::Null,
            Claim::Bool(b) => Value::Bool(*b),
            Claim::Number(n) => Value::Number(n.clone()),
            Claim::String(s) => Value::String(s.to_string()),
            Claim::Array(items) => Value::Array(items.iter().map(Claim::to_value).collect()),
            Claim::Object(members) => {
                Value::Object(members.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect())
            }
        }
    }
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

impl Node for Claim {
    fn member(&self, name: &str) -> Option<&Claim> {
        match self {
            Claim::Object(members) => members.binary_search_by(|(k, _)| (**k).cmp(name)).ok().map(|i| &members[i].1),
            _ => None,
        }
    }
    fn items(&self) -> Option<&[Claim]> {
        match self {
            Claim::Array(items) => Some(items),
            _ => None,
        }
    }
    fn text(&self) -> Option<&str> {
        match self {
            Claim::String(s) => Some(s),
            _ => None,
        }
    }
    fn number(&self) -> Option<u64> {
        match self {
            Claim::Number(n) => n.as_u64(),
            _ => None,
        }
    }
}
