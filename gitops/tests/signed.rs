//! Signed commits made by the real `git` with `ssh-keygen` keys (gpg.format=ssh): accepted from
//! allowed signers; unsigned commits and unknown signers refused, both by `prepare_sync` and by
//! replica-side verification.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Fixture, workload};
use nexus_gitops::repo::{FetchOptions, Mirrors};
use nexus_gitops::signature::{AllowedSigners, SignatureError};
use nexus_gitops::sync::RejectReason;
use nexus_gitops::sync::prepare::prepare_sync;
use nexus_gitops::verify::{VerifyRejection, verify_proposal};
use nexus_gitops::{LiveObjects, SourceConfig, SourceId};
use nexus_schemas::{GitSourceSpec, GitVerify};

fn have_ssh_keygen() -> bool {
    Command::new("ssh-keygen").arg("-?").output().is_ok()
}

fn keygen(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path.display().to_string(), public.trim().to_string())
}

fn signed_commit(f: &Fixture, key: &str, msg: &str) -> String {
    f.git(&["add", "-A"]);
    f.git(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("user.signingkey={key}"),
        "commit",
        "-q",
        "-S",
        "-m",
        msg,
    ]);
    f.git(&["rev-parse", "HEAD"])
}

fn config(url: &str, signers: Vec<String>) -> SourceConfig {
    SourceConfig::new(
        SourceId::new("default", "signed"),
        GitSourceSpec {
            url: url.to_string(),
            branch: "main".into(),
            path: ".".into(),
            interval: "10s".into(),
            prune: false,
            self_heal: false,
            verify: Some(GitVerify { ssh: signers }),
            webhook_secret_file: None,
        },
    )
}

#[test]
fn ssh_signed_commits_from_git() {
    if !have_ssh_keygen() {
        println!("skipped: ssh-keygen is not installed (apt-get install openssh-client)");
        return;
    }
    let f = Fixture::new();
    let keys = f.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (alice_key, alice_pub) = keygen(&keys, "alice");
    let (mallory_key, _) = keygen(&keys, "mallory");
    let signers = vec![format!("alice@example.com {alice_pub}")];
    let allowed = AllowedSigners::parse(&signers).unwrap();
    let cfg = config(&f.url(), signers);
    let mirror = Mirrors::new(&f.state).open(&f.url()).unwrap();
    let fetch = FetchOptions::default();
    let live = LiveObjects::new();

    // Signed by alice: accepted, and git itself agrees.
    f.write("a.yaml", &workload("a", 1));
    let good = signed_commit(&f, &alice_key, "signed by alice");
    f.push();
    let s = prepare_sync(&mirror, &cfg, &fetch, &live, None).unwrap();
    assert!(!s.plan.is_rejected(), "{:?}", s.plan.rejection);
    let by = s.signed_by.clone().unwrap();
    assert_eq!(by.principal, "alice@example.com");
    assert!(by.fingerprint.starts_with("SHA256:"));
    assert_eq!(mirror.verify_commit_signature(&good, &allowed).unwrap(), by);
    let signers_file = keys.join("allowed_signers");
    std::fs::write(&signers_file, format!("alice@example.com {alice_pub}\n")).unwrap();
    f.git(&[
        "-c",
        &format!("gpg.ssh.allowedSignersFile={}", signers_file.display()),
        "verify-commit",
        &good,
    ]);
    // A replica accepts the honest proposal.
    verify_proposal(
        &Mirrors::new(f.dir.path().join("r")).open(&f.url()).unwrap(),
        &cfg,
        &s.proposal(),
        None,
        &fetch,
    )
    .unwrap();

    // Unsigned: refused.
    f.write("b.yaml", &workload("b", 1));
    let unsigned = f.commit("not signed");
    f.push();
    let s = prepare_sync(&mirror, &cfg, &fetch, &live, None).unwrap();
    let r = s.plan.rejection.clone().unwrap();
    assert_eq!(r.reason, RejectReason::Unverified);
    assert_eq!(
        r.message,
        format!("commit {unsigned} is not signed; this source requires SSH-signed commits")
    );
    assert!(s.plan.ops.is_empty());

    // Signed by a key that is not allowed: refused, naming the key.
    f.write("c.yaml", &workload("c", 1));
    let bad = signed_commit(&f, &mallory_key, "signed by mallory");
    f.push();
    let s = prepare_sync(&mirror, &cfg, &fetch, &live, None).unwrap();
    let r = s.plan.rejection.clone().unwrap();
    assert!(
        r.message.contains("is not an allowed signer"),
        "{}",
        r.message
    );
    let err = mirror.verify_commit_signature(&bad, &allowed).unwrap_err();
    assert!(matches!(err, SignatureError::UnknownSigner { .. }));

    // A replica refuses a proposal for the unknown signer's commit even if the proposer did not.
    let mut unchecked = cfg.clone();
    unchecked.spec.verify = None;
    let p = prepare_sync(&mirror, &unchecked, &fetch, &live, None)
        .unwrap()
        .proposal();
    let err = verify_proposal(
        &Mirrors::new(f.dir.path().join("r2"))
            .open(&f.url())
            .unwrap(),
        &cfg,
        &p,
        None,
        &fetch,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyRejection::Signature(SignatureError::UnknownSigner { .. })
        ),
        "{err}"
    );
}

#[test]
fn commits_signed_in_process_verify_too() {
    // Independent of ssh-keygen: sign the commit buffer with the ssh-key crate.
    use ssh_key::private::{Ed25519Keypair, KeypairData};
    use ssh_key::{HashAlg, LineEnding, PrivateKey};
    let f = Fixture::new();
    f.write("a.yaml", &workload("a", 1));
    let base = f.commit("base");
    let repo = git2::Repository::open(&f.work).unwrap();
    let parent = repo
        .find_commit(git2::Oid::from_str(&base).unwrap())
        .unwrap();
    let sig = git2::Signature::now("Alice", "alice@example.com").unwrap();
    let buf = repo
        .commit_create_buffer(
            &sig,
            &sig,
            "signed in-process",
            &parent.tree().unwrap(),
            &[&parent],
        )
        .unwrap();
    let key = PrivateKey::new(
        KeypairData::Ed25519(Ed25519Keypair::from_seed(&[7; 32])),
        "k",
    )
    .unwrap();
    let armored = key
        .sign("git", HashAlg::Sha512, &buf)
        .unwrap()
        .to_pem(LineEnding::LF)
        .unwrap();
    let oid = repo
        .commit_signed(std::str::from_utf8(&buf).unwrap(), &armored, None)
        .unwrap();
    let line = format!(
        "alice@example.com {}",
        key.public_key().to_openssh().unwrap()
    );
    let gitops = nexus_gitops::GitRepo::open(&f.work).unwrap();
    let by = gitops
        .verify_commit_signature(&oid.to_string(), &AllowedSigners::parse(&[line]).unwrap())
        .unwrap();
    assert_eq!(by.principal, "alice@example.com");
    let unsigned = gitops.verify_commit_signature(&base, &AllowedSigners::default());
    assert!(matches!(unsigned, Err(SignatureError::Unsigned { .. })));
}
