//! The compact claim store: what the cache keeps of an introspection response's
//! extension claims, with strings and lists shared between cached tokens.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::Value;

/// A JSON tree as read, walked by claim paths. Implemented for `serde_json::Value` (request
/// bodies) and for [`Claim`] (cached introspection responses).
pub trait Node: Sized {
    fn member(&self, name: &str) -> Option<&Self>;
    fn items(&self) -> Option<&[Self]>;
    fn text(&self) -> Option<&str>;
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
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Arc<str>),
    /// Arrays too are shared (permission lists repeat across a consent's tokens).
    Array(Arc<[Claim]>),
    Object(Box<[(Arc<str>, Claim)]>),
}

/// The shared strings. Strings no token holds any more are dropped when the set has
/// doubled since the last sweep, so it stays proportional to what is cached.
struct Strings {
    set: HashSet<Arc<str>>,
    swept_at: usize,
    /// Arrays by their JSON text.
    arrays: HashMap<String, Arc<[Claim]>>,
    arrays_swept_at: usize,
    /// Space-separated lists (scopes) by their text.
    lists: HashMap<Box<str>, Arc<[Arc<str>]>>,
    lists_swept_at: usize,
}

static STRINGS: LazyLock<Mutex<Strings>> = LazyLock::new(|| {
    Mutex::new(Strings {
        set: HashSet::new(),
        swept_at: 1024,
        arrays: HashMap::new(),
        arrays_swept_at: 1024,
        lists: HashMap::new(),
        lists_swept_at: 1024,
    })
});

fn shared_array(items: &[Value], strings: &mut Strings) -> Arc<[Claim]> {
    let text = serde_json::to_string(items).unwrap_or_default();
    if let Some(found) = strings.arrays.get(&text) {
        return found.clone();
    }
    if strings.arrays.len() >= strings.arrays_swept_at * 2 {
        strings.arrays.retain(|_, a| Arc::strong_count(a) > 1);
        strings.arrays_swept_at = strings.arrays.len().max(1024);
    }
    let new: Arc<[Claim]> = items.iter().map(|i| Claim::compact(i, strings)).collect();
    strings.arrays.insert(text, new.clone());
    new
}

fn shared(s: &str, strings: &mut Strings) -> Arc<str> {
    if let Some(found) = strings.set.get(s) {
        return found.clone();
    }
    if strings.set.len() >= strings.swept_at * 2 {
        strings.set.retain(|a| Arc::strong_count(a) > 1);
        strings.swept_at = strings.set.len().max(1024);
    }
    let new: Arc<str> = s.into();
    strings.set.insert(new.clone());
    new
}

impl Claim {
    fn compact(v: &Value, strings: &mut Strings) -> Claim {
        match v {
            Value::Null => Claim::Null,
            Value::Bool(b) => Claim::Bool(*b),
            Value::Number(n) => Claim::Number(n.clone()),
            Value::String(s) => Claim::String(shared(s, strings)),
            Value::Array(items) => Claim::Array(shared_array(items, strings)),
            // serde_json's map iterates in key order: the slice is sorted for binary search.
            Value::Object(map) => {
                Claim::Object(map.iter().map(|(k, v)| (shared(k, strings), Claim::compact(v, strings))).collect())
            }
        }
    }
}

impl From<&Value> for Claim {
    fn from(v: &Value) -> Claim {
        let mut strings = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
        Claim::compact(v, &mut strings)
    }
}

impl Claim {
    /// An object's members but the `skipped` ones, compact.
    pub fn compact_except(v: &Value, skipped: &[&str]) -> Claim {
        let mut strings = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
        match v {
            Value::Object(map) => Claim::Object(
                map.iter()
                    .filter(|(k, _)| !skipped.contains(&k.as_str()))
                    .map(|(k, v)| (shared(k, &mut strings), Claim::compact(v, &mut strings)))
                    .collect(),
            ),
            other => Claim::compact(other, &mut strings),
        }
    }
}

/// The words of a space-separated list (a `scope`), shared with every other holder of the
/// same list.
pub fn share_list(text: &str) -> Arc<[Arc<str>]> {
    let mut strings = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = strings.lists.get(text) {
        return found.clone();
    }
    if strings.lists.len() >= strings.lists_swept_at * 2 {
        strings.lists.retain(|_, l| Arc::strong_count(l) > 1);
        strings.lists_swept_at = strings.lists.len().max(1024);
    }
    let list: Arc<[Arc<str>]> = text.split_whitespace().map(|w| shared(w, &mut strings)).collect();
    strings.lists.insert(text.into(), list.clone());
    list
}

/// A string shared with every other holder of the same text.
pub fn share(s: &str) -> Arc<str> {
    let mut strings = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
    shared(s, &mut strings)
}

impl Claim {
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
