//! Path templates (`/accounts/{AccountId}/balances`) compiled into a segment trie, so a
//! lookup costs one step per path segment whatever the number of routes.

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
}

impl PathTemplate {
    /// Parses `/a/{Name}/b`: literal segments and whole-segment parameters (letters, digits
    /// or `_`, each name once); empty, dot and percent-encoded segments are refused.
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        let rest = text.strip_prefix('/').ok_or_else(|| format!("path `{text}` must start with `/`"))?;
        if rest.is_empty() {
            return Ok(PathTemplate { segments: vec![] });
        }
        let mut seen = Vec::new();
        let segments = rest
            .split('/')
            .map(|seg| {
                if seg.is_empty() {
                    return Err(format!("path `{text}` has an empty segment"));
                }
                if let Some(inner) = seg.strip_prefix('{') {
                    let name = inner
                        .strip_suffix('}')
                        .ok_or_else(|| format!("path `{text}`: `{seg}` opens `{{` without closing it"))?;
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!("path `{text}`: parameter name `{name}` must be letters, digits or `_`"));
                    }
                    if seen.contains(&name) {
                        return Err(format!("path `{text}`: parameter `{name}` appears twice"));
                    }
                    seen.push(name);
                    Ok(TemplateSegment::Param(name.to_string()))
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

    /// Whether the template has a parameter `name`.
    pub fn has_param(&self, name: &str) -> bool {
        self.segments.iter().any(|s| matches!(s, TemplateSegment::Param(p) if p == name))
    }
}

/// Values of a matched template's parameters, in template order.
pub type PathParams = Vec<(String, String)>;

/// Why a path could not be matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMiss {
    /// No template has this path.
    NotFound,
    /// A template has this path, for other methods.
    MethodNotAllowed,
}

#[derive(Debug, Default)]
struct Node<T> {
    literals: HashMap<String, Node<T>>,
    param: Option<(String, Box<Node<T>>)>,
    by_method: Vec<(http::Method, T)>,
}

/// Maps (method, path) to a value, typically a route index.
#[derive(Debug)]
pub struct Router<T> {
    root: Node<T>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router { root: Node { literals: HashMap::new(), param: None, by_method: Vec::new() } }
    }
}

impl<T: Copy> Router<T> {
    /// Adds a route; on a clash returns the value already registered there.
    /// Parameters at the same position must have the same name (else they would be ambiguous).
    pub fn insert(&mut self, method: http::Method, template: &PathTemplate, value: T) -> Result<(), InsertError<T>> {
        let mut node = &mut self.root;
        for seg in &template.segments {
            node = match seg {
                TemplateSegment::Literal(l) => node.literals.entry(l.clone()).or_insert_with(|| Node {
                    literals: HashMap::new(),
                    param: None,
                    by_method: Vec::new(),
                }),
                TemplateSegment::Param(p) => {
                    let (existing, child) = node.param.get_or_insert_with(|| {
                        (p.clone(), Box::new(Node { literals: HashMap::new(), param: None, by_method: Vec::new() }))
                    });
                    if existing != p {
                        return Err(InsertError::ParamName { existing: existing.clone(), new: p.clone() });
                    }
                    child
                }
            };
        }
        if let Some((_, v)) = node.by_method.iter().find(|(m, _)| *m == method) {
            return Err(InsertError::Overlap(*v));
        }
        node.by_method.push((method, value));
        Ok(())
    }

    /// Finds the route for `path` (already split from its query). Literal segments win
    /// over parameters. Parameter values are percent-decoded.
    pub fn find(&self, method: &http::Method, path: &str) -> Result<(T, PathParams), RouteMiss> {
        let rest = path.strip_prefix('/').ok_or(RouteMiss::NotFound)?;
        let mut params = PathParams::new();
        let node = if rest.is_empty() {
            &self.root
        } else {
            Self::walk(&self.root, rest.split('/'), &mut params).ok_or(RouteMiss::NotFound)?
        };
        if node.by_method.is_empty() {
            return Err(RouteMiss::NotFound);
        }
        node.by_method.iter().find(|(m, _)| m == method).map(|(_, v)| (*v, params)).ok_or(RouteMiss::MethodNotAllowed)
    }

    fn walk<'a, 'p>(
        node: &'a Node<T>,
        mut segments: std::str::Split<'p, char>,
        params: &mut PathParams,
    ) -> Option<&'a Node<T>> {
        let Some(seg) = segments.next() else {
            return Some(node);
        };
        if let Some(child) = node.literals.get(seg) {
            let before = params.len();
            if let Some(found) = Self::walk(child, segments.clone(), params) {
                if !found.by_method.is_empty() {
                    return Some(found);
                }
            }
            params.truncate(before);
        }
        let (name, child) = node.param.as_ref()?;
        if seg.is_empty() {
            return None;
        }
        let value = percent_encoding::percent_decode_str(seg).decode_utf8().ok()?.into_owned();
        params.push((name.clone(), value));
        let found = Self::walk(child, segments, params);
        if found.is_none() {
            params.pop();
        }
        found
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
        assert_eq!(r.find(&Method::POST, "/accounts"), Err(RouteMiss::MethodNotAllowed));
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
        for t in ["accounts", "/a//b", "/a/{", "/a/{b}{c}", "/a/x{b}", "/a/{b}/{b}", "/a/..", "/a/%2F", "/a/{}"] {
            assert!(PathTemplate::parse(t).is_err(), "{t}");
        }
        assert!(PathTemplate::parse("/").is_ok());
    }
}
