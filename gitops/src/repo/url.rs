//! Repository URLs: which transport a GitSource URL uses (local path, file://, https://, ssh:// or
//! scp-like `git@host:org/repo`), what libgit2 is handed, and the cache directory name of its
//! mirror.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// How a repository is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A path on this machine (absolute, or relative to the working directory).
    Local,
    /// `file://`.
    File,
    /// `https://`.
    Https,
    /// `http://` (no transport security; for loopback test servers).
    Http,
    /// `ssh://` or scp-like `user@host:path`.
    Ssh,
}

/// A parsed repository URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// As written in the GitSource (what provenance records).
    pub original: String,
    pub transport: Transport,
    /// What libgit2 fetches from.
    pub fetch_url: String,
    /// The repository on disk, for local paths and file:// URLs (what the notify watcher watches).
    pub local_path: Option<PathBuf>,
}

/// A URL nexus does not fetch from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported repository URL {url:?}: {reason}")]
pub struct BadUrl {
    pub url: String,
    pub reason: &'static str,
}

impl RepoUrl {
    /// Classifies a URL. Relative local paths are made absolute against the working directory.
    pub fn parse(url: &str) -> Result<RepoUrl, BadUrl> {
        let bad = |reason| BadUrl {
            url: url.to_string(),
            reason,
        };
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(bad("the URL is empty"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(bad("the URL contains control characters"));
        }
        let lower = trimmed.to_ascii_lowercase();
        let with = |transport, fetch_url: String, local_path| RepoUrl {
            original: url.to_string(),
            transport,
            fetch_url,
            local_path,
        };
        if let Some(rest) = lower.strip_prefix("file://").map(|_| &trimmed[7..]) {
            if !rest.starts_with('/') {
                return Err(bad(
                    "file:// URLs need an absolute path (file:///srv/git/app.git)",
                ));
            }
            return Ok(with(
                Transport::File,
                trimmed.to_string(),
                Some(PathBuf::from(rest)),
            ));
        }
        for (prefix, transport) in [
            ("https://", Transport::Https),
            ("http://", Transport::Http),
            ("ssh://", Transport::Ssh),
        ] {
            if lower.starts_with(prefix) {
                if trimmed.len() == prefix.len() {
                    return Err(bad("the URL names no host"));
                }
                return Ok(with(transport, trimmed.to_string(), None));
            }
        }
        if lower.contains("://") {
            return Err(bad("use a local path, file://, https:// or ssh://"));
        }
        if lower.starts_with("ext::") || lower.starts_with('-') {
            return Err(bad("this URL form can run commands"));
        }
        // scp-like `user@host:path` (a ':' before any '/').
        if let Some(colon) = trimmed.find(':')
            && !trimmed[..colon].contains('/')
            && trimmed[..colon].contains('@')
        {
            return Ok(with(Transport::Ssh, trimmed.to_string(), None));
        }
        let path = std::path::absolute(trimmed).map_err(|_| bad("not a usable local path"))?;
        let fetch = path.to_string_lossy().into_owned();
        Ok(with(Transport::Local, fetch, Some(path)))
    }

    /// Whether the repository is on this machine (so a notify watcher can watch it).
    pub fn is_local(&self) -> bool {
        self.local_path.is_some()
    }

    /// Directory name of this URL's mirror: the last path segment (sanitized) and 16 hex digits
    /// of the SHA-256 of the URL, e.g. `platform-config-1f3a9c0d2b4e6f70.git`.
    pub fn mirror_dir_name(&self) -> String {
        let last = self
            .original
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or("repo")
            .trim_end_matches(".git");
        let mut stem: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        if stem.is_empty() {
            stem.push_str("repo");
        }
        let digest = Sha256::digest(self.original.as_bytes());
        format!("{stem}-{}.git", &hex::encode(digest)[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_urls() {
        let cases = [
            ("https://git.example.com/org/app.git", Transport::Https),
            ("http://127.0.0.1:3000/org/app", Transport::Http),
            ("ssh://git@git.example.com/org/app.git", Transport::Ssh),
            ("git@github.com:org/app.git", Transport::Ssh),
            ("file:///srv/git/app.git", Transport::File),
            ("/srv/git/app.git", Transport::Local),
            ("./repos/app", Transport::Local),
        ];
        for (url, t) in cases {
            let u = RepoUrl::parse(url).unwrap();
            assert_eq!(u.transport, t, "{url}");
            assert_eq!(u.original, url);
        }
        let local = RepoUrl::parse("./repos/app").unwrap();
        assert!(local.local_path.unwrap().is_absolute());
        assert_eq!(
            RepoUrl::parse("file:///srv/git/app.git")
                .unwrap()
                .local_path,
            Some(PathBuf::from("/srv/git/app.git"))
        );
    }

    #[test]
    fn rejects_unsafe_or_unknown_urls() {
        for url in [
            "",
            "  ",
            "ext::sh -c touch% /tmp/x",
            "git://host/repo",
            "file://relative",
            "ftp://h/x",
            "-uploadpack=x",
        ] {
            assert!(RepoUrl::parse(url).is_err(), "{url:?} should be rejected");
        }
    }

    #[test]
    fn mirror_names_are_stable_and_distinct() {
        let a = RepoUrl::parse("https://git.example.com/org/platform-config.git").unwrap();
        let b = RepoUrl::parse("https://other.example.com/org/platform-config.git").unwrap();
        assert!(a.mirror_dir_name().starts_with("platform-config-"));
        assert!(a.mirror_dir_name().ends_with(".git"));
        assert_ne!(a.mirror_dir_name(), b.mirror_dir_name());
        assert_eq!(a.mirror_dir_name(), a.clone().mirror_dir_name());
        let c = RepoUrl::parse("git@h:weird name!.git").unwrap();
        assert!(c.mirror_dir_name().starts_with("weird-name--"));
    }
}
