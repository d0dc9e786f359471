//! Field paths inside an object (`spec.ports[0].port`) and their lookup in the span tree.

use std::fmt;

use crate::yaml::{Node, Value};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the document root.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path(pub Vec<Seg>);

impl Path {
    /// The root path.
    pub fn root() -> Self {
        Path(Vec::new())
    }

    /// Parses `a.b[2].c` (keys made of anything but `.`, `[` and `]`).
    pub fn parse(text: &str) -> Self {
        let mut segs = Vec::new();
        for part in text.split('.').filter(|p| !p.is_empty()) {
            let mut rest = part;
            if let Some(i) = rest.find('[') {
                if i > 0 {
                    segs.push(Seg::Key(rest[..i].to_string()));
                }
                rest = &rest[i..];
                while let Some(stripped) = rest.strip_prefix('[') {
                    let end = stripped.find(']').unwrap_or(stripped.len());
                    if let Ok(n) = stripped[..end].parse() {
                        segs.push(Seg::Index(n));
                    }
                    rest = stripped.get(end + 1..).unwrap_or("");
                }
            } else {
                segs.push(Seg::Key(rest.to_string()));
            }
        }
        Path(segs)
    }

    /// This path extended by a key.
    pub fn key(&self, k: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    /// This path extended by an index.
    pub fn index(&self, i: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// The last key of the path, if it ends with a key.
    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) if is_plain_key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        if first {
            f.write_str("(root)")?;
        }
        Ok(())
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What a path points at in the span tree.
pub struct Located<'a> {
    /// The map key node, when the path ends in a key.
    pub key: Option<&'a Node>,
    /// The value node.
    pub value: &'a Node,
}

/// Finds the node at `path`. Returns the deepest node that exists when the path runs out early,
/// together with how many segments were matched.
pub fn locate<'a>(root: &'a Node, path: &Path) -> (Located<'a>, usize) {
    let mut cur = Located {
        key: None,
        value: root,
    };
    for (depth, seg) in path.0.iter().enumerate() {
        let next = match (seg, &cur.value.value) {
            (Seg::Key(k), Value::Map(entries)) => entries
                .iter()
                .find(|(kn, _)| kn.key_text() == *k)
                .map(|(kn, vn)| Located {
                    key: Some(kn),
                    value: vn,
                }),
            (Seg::Index(i), Value::Seq(items)) => items.get(*i).map(|vn| Located {
                key: None,
                value: vn,
            }),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return (cur, depth),
        }
    }
    (cur, path.0.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let p = Path::root().key("spec").key("ports").index(0).key("port");
        assert_eq!(p.to_string(), "spec.ports[0].port");
        assert_eq!(Path::parse("spec.ports[0].port"), p);
        let l = Path::root()
            .key("metadata")
            .key("labels")
            .key("app.kubernetes.io/name");
        assert_eq!(l.to_string(), "metadata.labels[\"app.kubernetes.io/name\"]");
    }
}
