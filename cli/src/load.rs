//! Reads manifest sources from the filesystem or stdin: files, directories (recursive, `*.yaml`
//! and `*.yml`, in sorted order) and `-` for stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use nexus_schemas::SourceFile;

/// Why sources could not be read (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: contains no *.yaml or *.yml files")]
    EmptyDir(String),
}

/// Loads every source named by `paths`, in the order given (directories sorted).
pub fn load_sources(paths: &[PathBuf]) -> Result<Vec<SourceFile>, LoadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|source| LoadError::Io {
                    path: "<stdin>".into(),
                    source,
                })?;
            out.push(SourceFile::from_bytes("<stdin>", buf));
            continue;
        }
        let meta = std::fs::metadata(p).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                LoadError::NotFound(p.display().to_string())
            } else {
                LoadError::Io {
                    path: p.display().to_string(),
                    source,
                }
            }
        })?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files)?;
            files.sort();
            if files.is_empty() {
                return Err(LoadError::EmptyDir(p.display().to_string()));
            }
            for f in files {
                out.push(read_file(&f)?);
            }
        } else {
            out.push(read_file(p)?);
        }
    }
    Ok(out)
}

fn read_file(p: &Path) -> Result<SourceFile, LoadError> {
    let bytes = std::fs::read(p).map_err(|source| LoadError::Io {
        path: p.display().to_string(),
        source,
    })?;
    Ok(SourceFile::from_bytes(p.display().to_string(), bytes))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let rd = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for entry in rd {
        let entry = entry.map_err(|source| LoadError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // .git, editor swap files
        }
        let ft = entry.file_type().map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}
