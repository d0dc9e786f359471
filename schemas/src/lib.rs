//! nexus-schemas: the manifest kinds of `nexus/v1`, YAML parsing with spans, validation that
//! reports every problem with file:line:col, JSON Schema export, canonical form and content hash,
//! and the pure diff of two manifest sets. No IO: callers hand in [`SourceFile`]s.

pub mod canonical;
pub mod diagnostic;
pub mod diff;
mod finding;
pub mod kinds;
pub mod path;
pub mod quantity;
pub mod schema;
pub mod semantic;
pub mod validate;
pub mod value;
pub mod yaml;

pub use canonical::{ContentHash, canonical_json, canonical_value, canonicalize, content_hash};
pub use diagnostic::{Diagnostic, Related, Severity, SourceFile, Span};
pub use diff::{ChangeSet, FieldChange, ObjectChange, Op, diff, diff_canonical};
pub use kinds::*;
pub use validate::{Origin, ParsedObject, Validation, did_you_mean, validate_sources};
pub use value::{Problem, claimed_key, validate_value};
