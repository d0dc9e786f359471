//! Renders schema diagnostics as miette reports (file:line:col, the offending text underlined,
//! a label saying what was expected, and a help line) or as JSON for editors and CI.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use nexus_schemas::{Diagnostic, Severity, SourceFile};

/// A schema diagnostic with its source attached, in the shape miette renders.
struct Report<'a> {
    diag: &'a Diagnostic,
    source: Option<NamedSource<String>>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.diag.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.diag.file, self.diag.line, self.diag.column, self.diag.message
            )
        } else {
            write!(f, "{}: {}", self.diag.file, self.diag.message)
        }
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.code))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.diag.span?;
        self.source.as_ref()?;
        let mut labels = vec![LabeledSpan::new_primary_with_span(
            self.diag.label.clone(),
            SourceSpan::new(span.offset.into(), span.len),
        )];
        if let Some(rel) = &self.diag.related
            && rel.file == self.diag.file
        {
            labels.push(LabeledSpan::new_with_span(
                Some(rel.label.clone()),
                SourceSpan::new(rel.span.offset.into(), rel.span.len),
            ));
        }
        Some(Box::new(labels.into_iter()))
    }
}

/// Lines longer than this are not shown as snippets (the location is still printed).
const MAX_SNIPPET_LINE: usize = 240;

fn line_len_at(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[offset..]
        .find('\n')
        .map(|i| offset + i)
        .unwrap_or(text.len());
    end - start
}

/// Renders every diagnostic, in order, as miette graphical reports.
pub fn render_diagnostics(diags: &[Diagnostic], files: &[SourceFile], color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false)
        .with_context_lines(1);
    let mut out = String::new();
    for d in diags {
        let source = d
            .span
            .and_then(|span| {
                files
                    .iter()
                    .find(|f| f.name == d.file)
                    .filter(|f| line_len_at(&f.text, span.offset) <= MAX_SNIPPET_LINE)
            })
            .map(|f| NamedSource::new(f.name.clone(), f.text.clone()).with_language("yaml"));
        let report = Report { diag: d, source };
        if handler.render_report(&mut out, &report).is_err() {
            out.push_str(&d.one_line());
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// `{"valid":..,"errors":..,"warnings":..,"files":..,"objects":[..],"diagnostics":[..]}`; each
/// object carries its location and canonical content hash.
pub fn diagnostics_json(v: &nexus_schemas::Validation, files: usize) -> String {
    let (errors, warnings) = v.counts();
    let objects: Vec<serde_json::Value> = v
        .objects
        .iter()
        .map(|o| {
            serde_json::json!({
                "kind": o.object.kind.as_str(),
                "namespace": o.object.metadata.namespace,
                "name": o.object.metadata.name,
                "file": o.origin.file_name,
                "line": o.origin.line,
                "contentHash": nexus_schemas::content_hash(&o.object).to_hex(),
            })
        })
        .collect();
    let v = serde_json::json!({
        "valid": errors == 0,
        "errors": errors,
        "warnings": warnings,
        "files": files,
        "objects": objects,
        "diagnostics": v.diagnostics,
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}
