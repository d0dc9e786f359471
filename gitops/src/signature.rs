//! Signed commits: git's `gpgsig` header holding an SSH signature (namespace `git`), checked
//! against a source's allowed signers (the `allowed_signers` format of `ssh-keygen -Y verify`:
//! `principals [options] key-type base64 [comment]`) with the ssh-key crate. Unsigned commits,
//! GPG signatures, unknown keys and bad signatures are refused with a reason.

use git2::Oid;
use ssh_key::{HashAlg, PublicKey, SshSig};
use thiserror::Error;

use crate::repo::GitRepo;

/// The SSH signature namespace git uses for commits and tags.
pub const GIT_NAMESPACE: &str = "git";

/// One allowed signer.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedSigner {
    /// Principals (usually e-mail addresses), as written.
    pub principals: String,
    /// `namespaces="..."`: the signer may only sign in these namespaces (`None` = any).
    pub namespaces: Option<Vec<String>>,
    /// `valid-after` / `valid-before`, seconds since the epoch (UTC), checked against the
    /// committer time as `git verify-commit` does.
    pub valid_after: Option<i64>,
    pub valid_before: Option<i64>,
    pub key: PublicKey,
}

/// A source's allowed signers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllowedSigners {
    pub signers: Vec<AllowedSigner>,
}

/// An allowed-signers entry that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("allowed signer #{}: {reason}", index + 1)]
pub struct SignersError {
    pub index: usize,
    pub reason: String,
}

/// Who signed a commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignedBy {
    /// The matching entry's principals.
    pub principal: String,
    /// `SHA256:...` of the signing key.
    pub fingerprint: String,
}

/// Why a commit's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("commit {commit} is not signed; this source requires SSH-signed commits")]
    Unsigned { commit: String },
    #[error(
        "commit {commit} has a GPG signature; this source accepts SSH signatures only (git config gpg.format ssh)"
    )]
    NotSsh { commit: String },
    #[error("commit {commit} has a malformed SSH signature: {reason}")]
    Malformed { commit: String, reason: String },
    #[error("commit {commit} is signed in namespace {found:?}, not \"git\"")]
    WrongNamespace { commit: String, found: String },
    #[error("commit {commit} is signed by key {fingerprint}, which is not an allowed signer")]
    UnknownSigner { commit: String, fingerprint: String },
    #[error("commit {commit}: signer {principal} may not sign in namespace \"git\"")]
    NamespaceNotAllowed { commit: String, principal: String },
    #[error("commit {commit}: signer {principal} is not valid at the commit time")]
    OutsideValidity { commit: String, principal: String },
    #[error("commit {commit}: the signature by {principal} ({fingerprint}) does not verify")]
    Invalid {
        commit: String,
        principal: String,
        fingerprint: String,
    },
    #[error("commit {commit}: cannot read its signature: {message}")]
    Read { commit: String, message: String },
}

impl AllowedSigners {
    /// Parses entries, one signer per entry; blank entries and `#` comments are skipped.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowedSigners, SignersError> {
        let mut signers = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let line = entry.as_ref().trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let signer = parse_line(line).map_err(|reason| SignersError { index, reason })?;
            signers.push(signer);
        }
        Ok(AllowedSigners { signers })
    }

    /// Whether no signer is configured.
    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }
}

fn is_key_type(token: &str) -> bool {
    token.starts_with("ssh-") || token.starts_with("ecdsa-") || token.starts_with("sk-")
}

/// Splits on whitespace, keeping double-quoted parts together.
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Splits `a,b="x,y",c` on commas outside quotes.
fn split_options(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_line(line: &str) -> Result<AllowedSigner, String> {
    let toks = tokens(line);
    let [principals, rest @ ..] = toks.as_slice() else {
        return Err("empty entry".into());
    };
    let (options, key_toks) = match rest {
        [first, ..] if is_key_type(first) => (None, rest),
        [opts, key @ ..] => (Some(opts.as_str()), key),
        [] => return Err("expected \"principal key-type base64-key\"".into()),
    };
    let [key_type, key_b64, ..] = key_toks else {
        return Err("expected a key type and a base64 key after the principals".into());
    };
    let key = PublicKey::from_openssh(&format!("{key_type} {key_b64}"))
        .map_err(|e| format!("invalid {key_type} key: {e}"))?;
    let mut signer = AllowedSigner {
        principals: principals.trim_matches('"').to_string(),
        namespaces: None,
        valid_after: None,
        valid_before: None,
        key,
    };
    for opt in options.map(split_options).unwrap_or_default() {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.to_string())),
            None => (opt.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("namespaces", Some(v)) => {
                signer.namespaces = Some(v.split(',').map(|s| s.trim().to_string()).collect())
            }
            ("valid-after", Some(v)) => signer.valid_after = Some(parse_time(&v)?),
            ("valid-before", Some(v)) => signer.valid_before = Some(parse_time(&v)?),
            ("cert-authority", None) => {
                return Err(
                    "cert-authority entries are not supported; list the signing keys".into(),
                );
            }
            (other, _) => return Err(format!("unsupported option {other:?}")),
        }
    }
    Ok(signer)
}

/// `YYYYMMDD[HHMM[SS]][Z]` as seconds since the epoch, read as UTC.
fn parse_time(text: &str) -> Result<i64, String> {
    let bad = || format!("invalid time {text:?} (expected YYYYMMDD[HHMM[SS]][Z])");
    let digits = text.strip_suffix(['Z', 'z']).unwrap_or(text);
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| {
        digits
            .get(r)
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let (y, m, d) = (num(0..4), num(4..6), num(6..8));
    let (hh, mm, ss) = (num(8..10), num(10..12), num(12..14));
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Verifies an armored signature over `signed_data` (the commit without its `gpgsig` header).
/// Pure: the commit id and time are only used in messages and validity checks.
pub fn verify_ssh_signature(
    commit: &str,
    signed_data: &[u8],
    signature: &[u8],
    commit_time: i64,
    signers: &AllowedSigners,
) -> Result<SignedBy, SignatureError> {
    let commit = commit.to_string();
    let text = String::from_utf8_lossy(signature);
    if text.contains("BEGIN PGP SIGNATURE") || text.contains("BEGIN SIGNED MESSAGE") {
        return Err(SignatureError::NotSsh { commit });
    }
    let sig = SshSig::from_pem(text.trim().as_bytes()).map_err(|e| SignatureError::Malformed {
        commit: commit.clone(),
        reason: e.to_string(),
    })?;
    if sig.namespace() != GIT_NAMESPACE {
        return Err(SignatureError::WrongNamespace {
            commit,
            found: sig.namespace().to_string(),
        });
    }
    let signing_key = PublicKey::from(sig.public_key().clone());
    let fingerprint = signing_key.fingerprint(HashAlg::Sha256).to_string();
    let candidates: Vec<&AllowedSigner> = signers
        .signers
        .iter()
        .filter(|s| s.key.key_data() == sig.public_key())
        .collect();
    let Some(first) = candidates.first() else {
        return Err(SignatureError::UnknownSigner {
            commit,
            fingerprint,
        });
    };
    let in_namespace = |s: &&&AllowedSigner| {
        s.namespaces
            .as_ref()
            .is_none_or(|ns| ns.iter().any(|n| n == GIT_NAMESPACE || n == "*"))
    };
    let Some(allowed) = candidates.iter().find(in_namespace) else {
        return Err(SignatureError::NamespaceNotAllowed {
            commit,
            principal: first.principals.clone(),
        });
    };
    let valid = candidates.iter().filter(in_namespace).find(|s| {
        s.valid_after.is_none_or(|t| commit_time >= t)
            && s.valid_before.is_none_or(|t| commit_time < t)
    });
    let Some(signer) = valid else {
        return Err(SignatureError::OutsideValidity {
            commit,
            principal: allowed.principals.clone(),
        });
    };
    signer
        .key
        .verify(GIT_NAMESPACE, signed_data, &sig)
        .map_err(|_| SignatureError::Invalid {
            commit: commit.clone(),
            principal: signer.principals.clone(),
            fingerprint: fingerprint.clone(),
        })?;
    Ok(SignedBy {
        principal: signer.principals.clone(),
        fingerprint,
    })
}

impl GitRepo {
    /// Verifies the SSH signature of `commit` against `signers`.
    pub fn verify_commit_signature(
        &self,
        commit: &str,
        signers: &AllowedSigners,
    ) -> Result<SignedBy, SignatureError> {
        let read_err = |message: String| SignatureError::Read {
            commit: commit.to_string(),
            message,
        };
        let oid = Oid::from_str(commit).map_err(|e| read_err(e.message().to_string()))?;
        let c = self
            .raw()
            .find_commit(oid)
            .map_err(|e| read_err(e.message().to_string()))?;
        let time = c.committer().when().seconds();
        match self.raw().extract_signature(&oid, None) {
            Ok((sig, data)) => verify_ssh_signature(commit, &data, &sig, time, signers),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Err(SignatureError::Unsigned {
                commit: commit.to_string(),
            }),
            Err(e) => Err(read_err(e.message().to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::private::{Ed25519Keypair, KeypairData};
    use ssh_key::{LineEnding, PrivateKey};

    fn key(seed: u8) -> PrivateKey {
        let kp = Ed25519Keypair::from_seed(&[seed; 32]);
        PrivateKey::new(KeypairData::Ed25519(kp), "test").unwrap()
    }

    fn signer_line(k: &PrivateKey, prefix: &str) -> String {
        format!("{prefix} {}", k.public_key().to_openssh().unwrap())
    }

    fn sign(k: &PrivateKey, ns: &str, data: &[u8]) -> Vec<u8> {
        let sig = k.sign(ns, HashAlg::Sha512, data).unwrap();
        sig.to_pem(LineEnding::LF).unwrap().into_bytes()
    }

    #[test]
    fn parses_allowed_signers_lines() {
        let k = key(1);
        let lines = [
            "# team".to_string(),
            signer_line(&k, "alice@example.com"),
            signer_line(
                &k,
                "bob@example.com,carol@example.com namespaces=\"git,file\",valid-after=20240101Z",
            ),
            String::new(),
        ];
        let s = AllowedSigners::parse(&lines).unwrap();
        assert_eq!(s.signers.len(), 2);
        assert_eq!(
            s.signers[1].namespaces.as_deref(),
            Some(&["git".to_string(), "file".to_string()][..])
        );
        assert_eq!(s.signers[1].valid_after, Some(1_704_067_200));
        for bad in [
            "alice@example.com".to_string(),
            "alice@example.com ssh-ed25519 !!!notbase64".to_string(),
            signer_line(&k, "alice@example.com cert-authority"),
            signer_line(&k, "alice@example.com no-touch-required"),
            signer_line(&k, "alice@example.com valid-before=2024"),
        ] {
            let err = AllowedSigners::parse(std::slice::from_ref(&bad)).unwrap_err();
            assert_eq!(err.index, 0, "{bad}");
        }
    }

    #[test]
    fn verifies_good_and_refuses_bad_signatures() {
        let alice = key(1);
        let mallory = key(2);
        let signers = AllowedSigners::parse(&[signer_line(&alice, "alice@example.com")]).unwrap();
        let data = b"tree 123\nauthor A\n\nmsg\n";
        let ok = verify_ssh_signature("c1", data, &sign(&alice, "git", data), 0, &signers).unwrap();
        assert_eq!(ok.principal, "alice@example.com");
        assert!(ok.fingerprint.starts_with("SHA256:"));
        // Tampered data.
        let err =
            verify_ssh_signature("c1", b"tree 999\n", &sign(&alice, "git", data), 0, &signers);
        assert!(
            matches!(err, Err(SignatureError::Invalid { .. })),
            "{err:?}"
        );
        // Unknown key.
        let err = verify_ssh_signature("c1", data, &sign(&mallory, "git", data), 0, &signers)
            .unwrap_err();
        assert!(err.to_string().contains("not an allowed signer"), "{err}");
        // Wrong namespace (a file signature replayed as a commit signature).
        let err = verify_ssh_signature("c1", data, &sign(&alice, "file", data), 0, &signers);
        assert!(matches!(err, Err(SignatureError::WrongNamespace { .. })));
        // GPG and garbage.
        let gpg = b"-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n";
        assert!(matches!(
            verify_ssh_signature("c1", data, gpg, 0, &signers),
            Err(SignatureError::NotSsh { .. })
        ));
        assert!(matches!(
            verify_ssh_signature("c1", data, b"junk", 0, &signers),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn namespace_and_validity_options_are_enforced() {
        let alice = key(1);
        let data = b"commit";
        let sig = sign(&alice, "git", data);
        let only_file =
            AllowedSigners::parse(&[signer_line(&alice, "a namespaces=\"file\"")]).unwrap();
        assert!(matches!(
            verify_ssh_signature("c", data, &sig, 0, &only_file),
            Err(SignatureError::NamespaceNotAllowed { .. })
        ));
        let window = AllowedSigners::parse(&[signer_line(
            &alice,
            "a valid-after=20240101,valid-before=20250101",
        )])
        .unwrap();
        let mid_2024 = 1_718_000_000;
        assert!(verify_ssh_signature("c", data, &sig, mid_2024, &window).is_ok());
        assert!(matches!(
            verify_ssh_signature("c", data, &sig, 1_600_000_000, &window),
            Err(SignatureError::OutsideValidity { .. })
        ));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(parse_time("19700101").unwrap(), 0);
        assert_eq!(parse_time("20000301000000Z").unwrap(), 951_868_800);
        assert!(parse_time("20241301").is_err());
    }
}
