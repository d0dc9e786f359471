//! A problem found in one document, located by its field path rather than by bytes: what the
//! JSON Schema and semantic checks produce. The manifest pipeline ([`crate::validate`]) turns
//! findings into file:line:col diagnostics through the span tree; [`crate::value`] reports them
//! with their paths, for objects that arrive as JSON (the replicas' check of submitted objects).

use crate::diagnostic::{Diagnostic, SourceFile, Span};
use crate::path::{Path, locate};
use crate::yaml::Node;

/// Which part of the node at a path a finding points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    /// The map key (an unknown field, a missing field inside a map).
    Key,
    /// The value (a wrong type, a bad quantity).
    Value,
    /// The start of the document (a missing top-level field).
    Start,
}

/// One problem: a stable code, the field path, what is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub code: &'static str,
    pub path: Path,
    pub at: At,
    pub message: String,
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Finding {
    pub fn new(code: &'static str, path: Path, at: At, message: impl Into<String>) -> Self {
        Finding {
            code,
            path,
            at,
            message: message.into(),
            label: None,
            help: None,
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the help line when there is one.
    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// The bytes of `doc` this finding points at.
    pub fn span(&self, doc: &Node) -> Span {
        if self.at == At::Start {
            return Span {
                offset: doc.span.offset,
                len: 0,
            };
        }
        let (loc, _) = locate(doc, &self.path);
        match (self.at, loc.key) {
            (At::Key, Some(k)) => k.span,
            // Prefer the value; empty spans (block maps) fall back to the key.
            _ if loc.value.span.len > 0 => loc.value.span,
            (_, Some(k)) => k.span,
            _ => loc.value.span,
        }
    }

    /// This finding as an error located in `file`.
    pub fn to_diagnostic(&self, file: &SourceFile, doc: &Node) -> Diagnostic {
        let mut d = Diagnostic::error(self.code, file, Some(self.span(doc)), self.message.clone());
        d.label = self.label.clone();
        d.help = self.help.clone();
        d
    }
}
