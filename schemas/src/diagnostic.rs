//! Diagnostics as plain data: severity, a stable code, a message, the file and span, and a help
//! line. The CLI renders them with miette; `-o json` serializes them as they are.

use serde::Serialize;

/// A byte range in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One manifest source: its display name (a path, `<stdin>`, or `repo@commit:path`) and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// What to call the file in diagnostics.
    pub name: String,
    /// The contents, with any invalid UTF-8 replaced by U+FFFD.
    pub text: String,
    /// Byte offset of the first invalid UTF-8 sequence, if the bytes were not UTF-8.
    pub invalid_utf8_at: Option<usize>,
    /// Size of the original bytes.
    pub size: usize,
}

impl SourceFile {
    /// Wraps raw bytes, remembering where they stop being UTF-8.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        let size = bytes.len();
        match String::from_utf8(bytes) {
            Ok(text) => SourceFile {
                name: name.into(),
                text,
                invalid_utf8_at: None,
                size,
            },
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                SourceFile {
                    name: name.into(),
                    text,
                    invalid_utf8_at: Some(at),
                    size,
                }
            }
        }
    }

    /// Wraps text.
    pub fn from_text(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let size = text.len();
        SourceFile {
            name: name.into(),
            text,
            invalid_utf8_at: None,
            size,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.text, offset)
    }
}

/// 1-based line and column (in characters) of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut start = 0;
    let mut line = 1;
    for (i, b) in text.as_bytes()[..offset].iter().enumerate() {
        if *b == b'\n' {
            line += 1;
            start = i + 1;
        }
    }
    let col = text
        .get(start..offset)
        .map(|s| s.chars().count())
        .unwrap_or(offset - start)
        + 1;
    (line, col)
}

/// A problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable identifier such as `nexus::unknown-field`, for editors and scripts.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// The file's display name.
    pub file: String,
    /// 1-based line of the span start (0 when the problem has no location).
    pub line: usize,
    /// 1-based column of the span start, in characters (0 when unknown).
    pub column: usize,
    /// The offending bytes.
    pub span: Option<Span>,
    /// Text shown under the underline: what was expected.
    pub label: Option<String>,
    /// What to do about it.
    pub help: Option<String>,
    /// A second place that matters (for example the first definition of a duplicate).
    pub related: Option<Related>,
}

/// A second location attached to a diagnostic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Related {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub span: Span,
    pub label: String,
}

impl Diagnostic {
    /// An error at `span` in `file`.
    pub fn error(
        code: &'static str,
        file: &SourceFile,
        span: Option<Span>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Error, code, file, span, message)
    }

    /// A warning at `span` in `file`.
    pub fn warning(
        code: &'static str,
        file: &SourceFile,
        span: Option<Span>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, code, file, span, message)
    }

    fn new(
        severity: Severity,
        code: &'static str,
        file: &SourceFile,
        span: Option<Span>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = span.map(|s| file.line_col(s.offset)).unwrap_or((0, 0));
        Diagnostic {
            severity,
            code,
            message: message.into(),
            file: file.name.clone(),
            line,
            column,
            span,
            label: None,
            help: None,
            related: None,
        }
    }

    /// Sets the label shown under the underline.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Sets the help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Attaches a related location.
    pub fn with_related(mut self, related: Related) -> Self {
        self.related = Some(related);
        self
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col: severity: message` — the one-line form for logs and sync errors.
    pub fn one_line(&self) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line > 0 {
            format!(
                "{}:{}:{}: {sev}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            format!("{}: {sev}: {}", self.file, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        let t = "ab\ncé d\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 6), (2, 3)); // after 'c' and 'é' (2 bytes)
    }

    #[test]
    fn non_utf8_is_located() {
        let f = SourceFile::from_bytes("x", b"a: 1\nb: \xff\n".to_vec());
        assert_eq!(f.invalid_utf8_at, Some(8));
    }
}
