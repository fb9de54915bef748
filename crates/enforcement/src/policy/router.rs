//! Path templates (`/accounts/{AccountId}/balances`, `/files/{Rest...}`) compiled into a
//! segment trie, so a lookup costs one step per path segment whatever the number of routes.
//!
//! Precedence, segment by segment: a literal beats a parameter, which beats a catch-all
//! (`{Name...}`, the last segment only, matching one or more whole segments).

use std::collections::HashMap;

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<TemplateSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplateSegment {
    Literal(String),
    Param(String),
    /// `{Name...}`: the rest of the path, one or more segments.
    Rest(String),
}

impl PathTemplate {
    /// Parses `/a/{Name}/b`: literal segments and whole-segment parameters (letters, digits
    /// or `_`, each name once), and a catch-all `{Name...}` as the last segment; empty,
    /// dot and percent-encoded segments are refused.
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        let rest = text.strip_prefix('/').ok_or_else(|| format!("path `{text}` must start with `/`"))?;
        if rest.is_empty() {
            return Ok(PathTemplate { segments: vec![] });
        }
        let mut seen = Vec::new();
        let count = rest.split('/').count();
        let segments = rest
            .split('/')
            .enumerate()
            .map(|(i, seg)| {
                if seg.is_empty() {
                    return Err(format!("path `{text}` has an empty segment"));
                }
                if let Some(inner) = seg.strip_prefix('{') {
                    let name = inner
                        .strip_suffix('}')
                        .ok_or_else(|| format!("path `{text}`: `{seg}` opens `{{` without closing it"))?;
                    let (name, rest) = match name.strip_suffix("...") {
                        Some(n) => (n, true),
                        None => (name, false),
                    };
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!(
                            "path `{text}`: parameter name `{name}` must be letters, digits or `_` (a catch-all is written `{{Name...}}`)"
                        ));
                    }
                    if seen.contains(&name) {
                        return Err(format!("path `{text}`: parameter `{name}` appears twice"));
                    }
                    seen.push(name);
                    if rest && i + 1 != count {
                        return Err(format!("path `{text}`: the catch-all `{seg}` must be the last segment"));
                    }
                    Ok(if rest {
                        TemplateSegment::Rest(name.to_string())
                    } else {
                        TemplateSegment::Param(name.to_string())
                    })
                } else if seg.contains(['{', '}']) {
                    Err(format!(
                        "path `{text}`: `{seg}` mixes a parameter with text; a parameter must be a whole segment"
                    ))
                } else if seg == "." || seg == ".." || seg.contains('%') {
                    Err(format!("path `{text}`: segment `{seg}` is not a plain literal"))
                } else {
                    Ok(TemplateSegment::Literal(seg.to_string()))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PathTemplate { segments })
    }

    /// Whether the template has a parameter `name` (one segment; not a catch-all).
    pub fn has_param(&self, name: &str) -> bool {
        self.segments.iter().any(|s| matches!(s, TemplateSegment::Param(p) if p == name))
    }

    /// The catch-all's name, when the template ends with `{Name...}`.
    pub fn catch_all(&self) -> Option<&str> {
        match self.segments.last() {
            Some(TemplateSegment::Rest(name)) => Some(name),
            _ => None,
        }
    }

    /// Literal segments that look like a glob or a misspelt parameter (`*`, `**`,
    /// `rest...`), which match only themselves: for `check` to warn about.
    pub fn glob_like_literals(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                TemplateSegment::Literal(l) if l.contains('*') || l.contains("...") || l.starts_with(':') => {
                    Some(l.as_str())
                }
                _ => None,
            })
            .collect()
    }
}

/// Values of a matched template's parameters, in template order.
pub type PathParams = Vec<(String, String)>;

/// Why a path could not be matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMiss {
    /// No template has this path.
    NotFound,
    /// A template has this path, for other methods: these (for `Allow`).
    MethodNotAllowed(Vec<http::Method>),
}

#[derive(Debug)]
struct Node<T> {
    literals: HashMap<String, Node<T>>,
    param: Option<(String, Box<Node<T>>)>,
    /// A catch-all's name and its methods (it ends the template).
    rest: Option<(String, Vec<(http::Method, T)>)>,
    by_method: Vec<(http::Method, T)>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node { literals: HashMap::new(), param: None, rest: None, by_method: Vec::new() }
    }
}

/// Maps (method, path) to a value, typically a route index.
#[derive(Debug)]
pub struct Router<T> {
    root: Node<T>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router { root: Node::default() }
    }
}

impl<T: Copy> Router<T> {
    /// Adds a route; on a clash returns the value already registered there.
    /// Parameters at the same position must have the same name (else they would be ambiguous).
    pub fn insert(&mut self, method: http::Method, template: &PathTemplate, value: T) -> Result<(), InsertError<T>> {
        let mut node = &mut self.root;
        let mut methods = None;
        for seg in &template.segments {
            node = match seg {
                TemplateSegment::Literal(l) => node.literals.entry(l.clone()).or_default(),
                TemplateSegment::Param(p) => {
                    let (existing, child) = node.param.get_or_insert_with(|| (p.clone(), Box::default()));
                    if existing != p {
                        return Err(InsertError::ParamName { existing: existing.clone(), new: p.clone() });
                    }
                    child
                }
                TemplateSegment::Rest(p) => {
                    let (existing, by_method) = node.rest.get_or_insert_with(|| (p.clone(), Vec::new()));
                    if existing != p {
                        return Err(InsertError::ParamName { existing: existing.clone(), new: p.clone() });
                    }
                    methods = Some(by_method);
                    break;
                }
            };
        }
        let by_method = match methods {
            Some(m) => m,
            None => &mut node.by_method,
        };
        if let Some((_, v)) = by_method.iter().find(|(m, _)| *m == method) {
            return Err(InsertError::Overlap(*v));
        }
        by_method.push((method, value));
        Ok(())
    }

    /// Finds the route for `path` (already split from its query). The path is matched
    /// first, as a bank's router does: segment by segment a literal wins over a parameter,
    /// a parameter over a catch-all, falling back only where the more specific template
    /// matches no whole path; then the method, a 405 naming the methods of that path.
    /// Parameter values are percent-decoded.
    pub fn find(&self, method: &http::Method, path: &str) -> Result<(T, PathParams), RouteMiss> {
        let rest = path.strip_prefix('/').ok_or(RouteMiss::NotFound)?;
        let mut params = PathParams::new();
        let by_method = if rest.is_empty() {
            Some(self.root.by_method.as_slice()).filter(|m| !m.is_empty())
        } else {
            Self::walk(&self.root, rest, &mut params)
        };
        let by_method = by_method.ok_or(RouteMiss::NotFound)?;
        match by_method.iter().find(|(m, _)| m == method) {
            Some((_, v)) => Ok((*v, params)),
            None => Err(RouteMiss::MethodNotAllowed(by_method.iter().map(|(m, _)| m.clone()).collect())),
        }
    }

    /// The methods of the most specific template matching `rest` (the path after this
    /// node, without its leading `/`, not empty).
    fn walk<'a>(node: &'a Node<T>, rest: &str, params: &mut PathParams) -> Option<&'a [(http::Method, T)]> {
        let (seg, after) = match rest.split_once('/') {
            Some((s, a)) => (s, Some(a)),
            None => (rest, None),
        };
        if seg.is_empty() {
            return None;
        }
        let descend = |child: &'a Node<T>, params: &mut PathParams| match after {
            None => Some(child.by_method.as_slice()).filter(|m| !m.is_empty()),
            Some(a) => Self::walk(child, a, params),
        };
        if let Some(child) = node.literals.get(seg) {
            let before = params.len();
            if let Some(found) = descend(child, params) {
                return Some(found);
            }
            params.truncate(before);
        }
        if let Some((name, child)) = &node.param {
            if let Ok(value) = percent_encoding::percent_decode_str(seg).decode_utf8() {
                params.push((name.clone(), value.into_owned()));
                if let Some(found) = descend(child, params) {
                    return Some(found);
                }
                params.pop();
            }
        }
        let (name, by_method) = node.rest.as_ref()?;
        if rest.split('/').any(str::is_empty) {
            return None;
        }
        // The rest of the path as one value; the request path was checked for normal form
        // (no dot segments, no encoded `/`) before routing, so it cannot climb out.
        let value = percent_encoding::percent_decode_str(rest).decode_utf8().ok()?.into_owned();
        params.push((name.clone(), value));
        Some(by_method.as_slice())
    }
}

/// Why a route could not be added to a [`Router`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertError<T> {
    /// The method and path are routed already: to this value.
    Overlap(T),
    /// Another route has a parameter of another name at the same position.
    ParamName {
        /// The name already routed there.
        existing: String,
        /// The name in the template being added.
        new: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn router() -> Router<usize> {
        let mut r = Router::default();
        for (i, t) in ["/accounts", "/accounts/{AccountId}", "/accounts/{AccountId}/balances", "/accounts/special"]
            .iter()
            .enumerate()
        {
            r.insert(Method::GET, &PathTemplate::parse(t).unwrap(), i).unwrap();
        }
        r
    }

    #[test]
    fn matches_literals_and_params() {
        let r = router();
        assert_eq!(r.find(&Method::GET, "/accounts").unwrap().0, 0);
        let (i, p) = r.find(&Method::GET, "/accounts/A%201/balances").unwrap();
        assert_eq!(i, 2);
        assert_eq!(p, vec![("AccountId".to_string(), "A 1".to_string())]);
        assert_eq!(r.find(&Method::GET, "/accounts/special").unwrap().0, 3);
        assert_eq!(r.find(&Method::GET, "/accounts/x").unwrap().0, 1);
    }

    #[test]
    fn misses() {
        let r = router();
        assert_eq!(r.find(&Method::GET, "/nope"), Err(RouteMiss::NotFound));
        assert_eq!(r.find(&Method::GET, "/accounts/"), Err(RouteMiss::NotFound));
        assert_eq!(r.find(&Method::GET, "/accounts/a/b/c"), Err(RouteMiss::NotFound));
        assert_eq!(r.find(&Method::POST, "/accounts"), Err(RouteMiss::MethodNotAllowed(vec![Method::GET])));
        assert_eq!(r.find(&Method::GET, "accounts"), Err(RouteMiss::NotFound));
    }

    #[test]
    fn overlap_and_param_names_are_refused() {
        let mut r = router();
        let t = PathTemplate::parse("/accounts/{AccountId}").unwrap();
        assert_eq!(r.insert(Method::GET, &t, 9), Err(InsertError::Overlap(1)));
        let t = PathTemplate::parse("/accounts/{Other}/x").unwrap();
        assert!(matches!(r.insert(Method::GET, &t, 9), Err(InsertError::ParamName { .. })));
    }

    #[test]
    fn bad_templates() {
        for t in [
            "accounts",
            "/a//b",
            "/a/{",
            "/a/{b}{c}",
            "/a/x{b}",
            "/a/{b}/{b}",
            "/a/..",
            "/a/%2F",
            "/a/{}",
            "/a/{b...}/c",
            "/a/{...}",
            "/a/{b}/{b...}",
        ] {
            assert!(PathTemplate::parse(t).is_err(), "{t}");
        }
        assert!(PathTemplate::parse("/").is_ok());
    }

    fn catch_all_router() -> Router<usize> {
        let mut r = Router::default();
        let routes = [
            (Method::GET, "/payments"),
            (Method::GET, "/payments/{PaymentId}"),
            (Method::GET, "/payments/special/x"),
            (Method::GET, "/payments/{Rest...}"),
            (Method::POST, "/payments/{Rest...}"),
            (Method::GET, "/files/{Path...}"),
        ];
        for (i, (m, t)) in routes.iter().enumerate() {
            r.insert(m.clone(), &PathTemplate::parse(t).unwrap(), i).unwrap();
        }
        r
    }

    #[test]
    fn a_catch_all_takes_what_literals_and_parameters_leave() {
        let r = catch_all_router();
        assert_eq!(r.find(&Method::GET, "/payments").unwrap().0, 0);
        assert_eq!(r.find(&Method::GET, "/payments/p1").unwrap().0, 1);
        assert_eq!(r.find(&Method::GET, "/payments/special/x").unwrap().0, 2);
        let (i, p) = r.find(&Method::GET, "/payments/special/y").unwrap();
        assert_eq!((i, p), (3, vec![("Rest".to_string(), "special/y".to_string())]));
        let (i, p) = r.find(&Method::GET, "/payments/p1/refunds/r%201").unwrap();
        assert_eq!((i, p), (3, vec![("Rest".to_string(), "p1/refunds/r 1".to_string())]));
        // The path decides first, as the bank's router: the parameter route's methods.
        assert_eq!(r.find(&Method::POST, "/payments/p1"), Err(RouteMiss::MethodNotAllowed(vec![Method::GET])));
        assert_eq!(r.find(&Method::POST, "/payments/p1/x").unwrap().0, 4);
        // One segment at least: `/files` itself is not under the catch-all.
        assert_eq!(r.find(&Method::GET, "/files"), Err(RouteMiss::NotFound));
        assert_eq!(r.find(&Method::GET, "/files/a/b/c").unwrap().0, 5);
        assert_eq!(r.find(&Method::GET, "/files/a//c"), Err(RouteMiss::NotFound));
        assert_eq!(r.find(&Method::GET, "/other/a"), Err(RouteMiss::NotFound));
        let Err(RouteMiss::MethodNotAllowed(allowed)) = r.find(&Method::DELETE, "/payments/p1/x") else {
            panic!("405 expected")
        };
        assert_eq!(allowed, vec![Method::GET, Method::POST]);
        assert_eq!(r.find(&Method::DELETE, "/payments"), Err(RouteMiss::MethodNotAllowed(vec![Method::GET])));
    }

    #[test]
    fn glob_like_literals_are_named() {
        let t = PathTemplate::parse("/a/*/b/**/rest.../{X}").unwrap();
        assert_eq!(t.glob_like_literals(), vec!["*", "**", "rest..."]);
        assert_eq!(PathTemplate::parse("/a/{Rest...}").unwrap().catch_all(), Some("Rest"));
        assert!(PathTemplate::parse("/a/{Rest...}").unwrap().glob_like_literals().is_empty());
        let mut r: Router<usize> = Router::default();
        r.insert(Method::GET, &PathTemplate::parse("/a/{Rest...}").unwrap(), 0).unwrap();
        let clash = r.insert(Method::GET, &PathTemplate::parse("/a/{Other...}").unwrap(), 1);
        assert!(matches!(clash, Err(InsertError::ParamName { .. })));
        assert_eq!(
            r.insert(Method::GET, &PathTemplate::parse("/a/{Rest...}").unwrap(), 1),
            Err(InsertError::Overlap(0))
        );
    }
}
