//! Checks JSON Schema cannot express: quantities, DNS-1123 names, label syntax, CIDRs, durations
//! and rules between fields. They read the raw JSON so they run even when the schema found other
//! problems in the same document.

use serde_json::Value as Json;

use crate::finding::{At, Finding};
use crate::kinds::Kind;
use crate::path::Path;
use crate::quantity::{Bytes, Millicores, QuantityError, parse_duration_ms};

/// Collects the semantic findings of one document.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    pub findings: Vec<Finding>,
}

impl Checker {
    fn push(
        &mut self,
        code: &'static str,
        path: &Path,
        at: At,
        message: String,
        label: &str,
        help: String,
    ) {
        self.findings.push(
            Finding::new(code, path.clone(), at, message)
                .with_label(label)
                .with_help(help),
        );
    }

    fn error(
        &mut self,
        code: &'static str,
        path: &Path,
        message: String,
        label: &str,
        help: String,
    ) {
        self.push(code, path, At::Value, message, label, help);
    }

    fn key_error(
        &mut self,
        code: &'static str,
        path: &Path,
        message: String,
        label: &str,
        help: String,
    ) {
        self.push(code, path, At::Key, message, label, help);
    }
}

fn get<'j>(v: &'j Json, path: &str) -> Option<&'j Json> {
    let mut cur = v;
    for k in path.split('.') {
        cur = cur.get(k)?;
    }
    Some(cur)
}

/// Runs every semantic check for a document of `kind`.
pub(crate) fn check(kind: Kind, doc: &Json, c: &mut Checker) {
    let meta = Path::root().key("metadata");
    if let Some(name) = get(doc, "metadata.name").and_then(Json::as_str) {
        dns_label(c, &meta.key("name"), name, "name");
    }
    if let Some(ns) = get(doc, "metadata.namespace").and_then(Json::as_str) {
        dns_label(c, &meta.key("namespace"), ns, "namespace");
    }
    if let Some(labels) = get(doc, "metadata.labels").and_then(Json::as_object) {
        label_map(c, &meta.key("labels"), labels);
    }
    let spec = Path::root().key("spec");
    let Some(s) = doc.get("spec") else { return };
    match kind {
        Kind::Workload => workload(c, &spec, s),
        Kind::Service => service(c, &spec, s),
        Kind::NetworkPolicy => network_policy(c, &spec, s),
        Kind::GitSource => git_source(c, &spec, s),
    }
}

/// A DNS-1123 label: 1-63 characters of [a-z0-9-], starting and ending alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The nearest DNS-1123 label to `s` (lower-cased, invalid characters replaced by '-').
pub fn suggest_dns_label(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches('-');
    out.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

fn dns_label(c: &mut Checker, path: &Path, s: &str, what: &str) {
    if is_dns_label(s) {
        return;
    }
    let why = if s.is_empty() {
        "must not be empty".to_string()
    } else if s.len() > 63 {
        format!("is {} characters long; the limit is 63", s.len())
    } else {
        "may contain only lower-case letters, digits and '-', and must start and end with a letter or digit".to_string()
    };
    let suggestion = suggest_dns_label(s);
    let help = if suggestion.is_empty() || suggestion == s {
        format!("choose a {what} such as \"web\" or \"api-v2\"")
    } else {
        format!("try \"{suggestion}\"")
    };
    c.error(
        "nexus::invalid-name",
        path,
        format!("invalid {what} {s:?}: a {what} {why}"),
        "not a DNS-1123 label",
        help,
    );
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn label_map(c: &mut Checker, path: &Path, labels: &serde_json::Map<String, Json>) {
    for (k, v) in labels {
        let (prefix, name) = match k.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        if !is_label_name(name) || prefix.is_some_and(|p| !is_dns_subdomain(p)) {
            c.key_error(
                "nexus::invalid-label",
                &path.key(k),
                format!("invalid label key {k:?}"),
                "not a valid label key",
                "a label key is an optional DNS subdomain prefix and '/', then 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit (e.g. \"app\" or \"example.com/tier\")".into(),
            );
        }
        if let Some(v) = v.as_str()
            && !(v.is_empty() || is_label_name(v))
        {
            c.error(
                    "nexus::invalid-label",
                    &path.key(k),
                    format!("invalid label value {v:?} for {k:?}"),
                    "not a valid label value",
                    "a label value is empty or 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into(),
                );
        }
    }
}

fn quantity_help(err: &QuantityError, kind: &str) -> String {
    match (err, kind) {
        (QuantityError::UnknownSuffix { .. }, "cpu") => "CPU is whole cores (\"2\", \"1.5\") or millicores with `m` (\"500m\")".into(),
        (QuantityError::UnknownSuffix { .. }, _) => "memory suffixes are Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T (powers of 1000), e.g. \"128Mi\"".into(),
        (QuantityError::TooPrecise(..), "cpu") => "the smallest CPU unit is 1m (a thousandth of a core)".into(),
        (QuantityError::TooPrecise(..), _) => "memory must be a whole number of bytes".into(),
        (_, "cpu") => "write CPU as \"500m\" or a number of cores such as 2".into(),
        _ => "write memory as a number with a suffix, e.g. \"128Mi\" or \"1Gi\"".into(),
    }
}

fn workload(c: &mut Checker, spec: &Path, s: &Json) {
    let res = spec.key("resources");
    // (field, label, parser into a count of the smallest unit, help when zero)
    type Parse = fn(&str) -> Result<u64, QuantityError>;
    let quantities: [(&str, &str, Parse, &str); 2] = [
        (
            "cpu",
            "CPU",
            |t| Millicores::parse(t).map(|m| m.0),
            "request at least 1m of CPU, e.g. \"100m\"",
        ),
        (
            "memory",
            "memory",
            |t| Bytes::parse(t).map(|b| b.0),
            "give each replica some memory, e.g. \"128Mi\"",
        ),
    ];
    for (field, label, parse, zero_help) in quantities {
        let Some(text) = s
            .get("resources")
            .and_then(|r| r.get(field))
            .and_then(quantity_text)
        else {
            continue;
        };
        let path = res.key(field);
        match parse(&text) {
            Ok(0) => c.error(
                "nexus::out-of-range",
                &path,
                format!("spec.resources.{field} must be greater than zero, found {text:?}"),
                "must be > 0",
                zero_help.into(),
            ),
            Ok(_) => {}
            Err(e) => {
                let help = quantity_help(&e, field);
                c.error(
                    "nexus::invalid-quantity",
                    &path,
                    format!("invalid {label} quantity {text:?}: {e}"),
                    &format!("not a {label} quantity"),
                    help,
                )
            }
        }
    }
    let runtime = s.get("runtime").and_then(Json::as_str).unwrap_or("process");
    let command_empty = s
        .get("command")
        .and_then(Json::as_array)
        .is_none_or(|a| a.is_empty());
    if runtime == "process" && command_empty && s.get("command").is_none_or(Json::is_array) {
        let at = if s.get("command").is_some() {
            spec.key("command")
        } else {
            spec.clone()
        };
        c.key_error("nexus::missing-field", &at, "the process runtime needs a command".into(), "add `command: [program, args...]`", "set spec.command, e.g. `command: [\"python3\", \"-m\", \"http.server\", \"8080\"]`, or use `runtime: oci` with an image".into());
    }
    if runtime == "oci" && s.get("image").is_none() {
        c.key_error(
            "nexus::missing-field",
            &spec.key("runtime"),
            "the oci runtime needs an image".into(),
            "add `image:`",
            "set spec.image, e.g. `image: registry.local/api:1.4`".into(),
        );
    }
    if let Some(cmd) = s.get("command").and_then(Json::as_array)
        && cmd
            .first()
            .and_then(Json::as_str)
            .is_some_and(|p| p.trim().is_empty())
    {
        c.error(
            "nexus::invalid-value",
            &spec.key("command").index(0),
            "the program name is empty".into(),
            "empty",
            "the first element of command is the program to run".into(),
        );
    }
    if let Some(env) = s.get("env").and_then(Json::as_object) {
        for k in env.keys() {
            let valid = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                c.key_error(
                    "nexus::invalid-name",
                    &spec.key("env").key(k),
                    format!("invalid environment variable name {k:?}"),
                    "not a variable name",
                    "names are letters, digits and '_', not starting with a digit (e.g. LOG_LEVEL)"
                        .into(),
                );
            }
        }
    }
    ports(c, &spec.key("ports"), s.get("ports"));
    if let Some(h) = s.get("health").and_then(Json::as_object) {
        let set: Vec<&str> = ["http", "tcp", "exec"]
            .into_iter()
            .filter(|k| h.contains_key(*k))
            .collect();
        if set.len() != 1 {
            let found = if set.is_empty() {
                "none".to_string()
            } else {
                set.join(" and ")
            };
            c.key_error(
                "nexus::invalid-probe",
                &spec.key("health"),
                format!("a health probe needs exactly one of http, tcp or exec; found {found}"),
                "one of http, tcp, exec",
                "for example `health: {http: {path: /healthz, port: 8080}}`".into(),
            );
        }
        if let Some(cmd) = h
            .get("exec")
            .and_then(|e| e.get("command"))
            .and_then(Json::as_array)
            && cmd.is_empty()
        {
            c.error(
                "nexus::invalid-probe",
                &spec.key("health").key("exec").key("command"),
                "the exec probe's command is empty".into(),
                "empty",
                "give the command to run, e.g. [\"test\", \"-f\", \"/tmp/ready\"]".into(),
            );
        }
    }
    let ru = s.get("rollingUpdate");
    let unavailable = ru
        .and_then(|r| r.get("maxUnavailable"))
        .and_then(Json::as_u64)
        .unwrap_or(0);
    let surge = ru
        .and_then(|r| r.get("maxSurge"))
        .and_then(Json::as_u64)
        .unwrap_or(1);
    if unavailable == 0 && surge == 0 && ru.is_some() {
        c.key_error(
            "nexus::invalid-value",
            &spec.key("rollingUpdate"),
            "maxUnavailable and maxSurge are both 0, so an update could never replace a replica"
                .into(),
            "both 0",
            "allow at least one: `maxSurge: 1` (start a new replica first) or `maxUnavailable: 1`"
                .into(),
        );
    }
}

fn quantity_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None, // type errors come from the schema
    }
}

fn port_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && n.bytes().any(|b| b.is_ascii_lowercase())
        && !n.starts_with('-')
        && !n.ends_with('-')
}

fn ports(c: &mut Checker, path: &Path, ports: Option<&Json>) {
    let Some(list) = ports.and_then(Json::as_array) else {
        return;
    };
    let mut seen: Vec<(u64, String)> = Vec::new();
    for (i, p) in list.iter().enumerate() {
        if let Some(name) = p.get("name").and_then(Json::as_str)
            && !port_name_ok(name)
        {
            c.error("nexus::invalid-name", &path.index(i).key("name"), format!("invalid port name {name:?}"), "not a port name", "a port name is 1-15 lower-case letters, digits and '-', with at least one letter (e.g. \"http\")".into());
        }
        if let Some(port) = p.get("port").and_then(Json::as_u64) {
            let proto = p
                .get("protocol")
                .and_then(Json::as_str)
                .unwrap_or("TCP")
                .to_string();
            if seen.contains(&(port, proto.clone())) {
                c.error(
                    "nexus::duplicate-port",
                    &path.index(i).key("port"),
                    format!("port {port}/{proto} is listed twice"),
                    "listed before",
                    "remove the repeated port".into(),
                );
            }
            seen.push((port, proto));
        }
    }
}

fn service(c: &mut Checker, spec: &Path, s: &Json) {
    if s.get("selector")
        .and_then(Json::as_object)
        .is_some_and(|m| m.is_empty())
    {
        c.key_error(
            "nexus::invalid-value",
            &spec.key("selector"),
            "a Service selector must not be empty".into(),
            "selects nothing",
            "select the workloads behind the service by label, e.g. `selector: {app: api}`".into(),
        );
    }
    if let Some(sel) = s.get("selector").and_then(Json::as_object) {
        label_map(c, &spec.key("selector"), sel);
    }
    if s.get("ports")
        .and_then(Json::as_array)
        .is_some_and(|a| a.is_empty())
    {
        c.key_error(
            "nexus::invalid-value",
            &spec.key("ports"),
            "a Service needs at least one port".into(),
            "empty",
            "add a port, e.g. `ports: [{port: 80, targetPort: 8080}]`".into(),
        );
    }
    ports(c, &spec.key("ports"), s.get("ports"));
}

fn network_policy(c: &mut Checker, spec: &Path, s: &Json) {
    if let Some(sel) = s.get("selector").and_then(Json::as_object) {
        label_map(c, &spec.key("selector"), sel);
    }
    for (dir, peers_key) in [("ingress", "from"), ("egress", "to")] {
        let Some(rules) = s.get(dir).and_then(Json::as_array) else {
            continue;
        };
        for (i, rule) in rules.iter().enumerate() {
            let rpath = spec.key(dir).index(i);
            if let Some(peers) = rule.get(peers_key).and_then(Json::as_array) {
                for (j, peer) in peers.iter().enumerate() {
                    let ppath = rpath.key(peers_key).index(j);
                    let Some(obj) = peer.as_object() else {
                        continue;
                    };
                    let has_sel = obj.contains_key("selector");
                    let has_cidr = obj.contains_key("cidr");
                    if has_sel == has_cidr {
                        let found = if has_sel { "both" } else { "neither" };
                        c.key_error("nexus::invalid-peer", &ppath, format!("a policy peer needs exactly one of selector or cidr; found {found}"), "selector or cidr", "write `{selector: {app: web}}` for workloads or `{cidr: 10.0.0.0/8}` for addresses".into());
                    }
                    if let Some(cidr) = obj.get("cidr").and_then(Json::as_str)
                        && parse_cidr(cidr).is_none()
                    {
                        c.error("nexus::invalid-cidr", &ppath.key("cidr"), format!("invalid CIDR {cidr:?}"), "not an address range", "write an address and prefix length, e.g. \"10.0.0.0/8\" or \"fd00::/64\"".into());
                    }
                    if obj.contains_key("namespace") && has_cidr && !has_sel {
                        c.key_error(
                            "nexus::invalid-peer",
                            &ppath.key("namespace"),
                            "namespace only applies to selector peers".into(),
                            "ignored with cidr",
                            "remove `namespace`, or use `selector`".into(),
                        );
                    }
                    if let Some(ns) = obj.get("namespace").and_then(Json::as_str) {
                        dns_label(c, &ppath.key("namespace"), ns, "namespace");
                    }
                    if let Some(sel) = obj.get("selector").and_then(Json::as_object) {
                        label_map(c, &ppath.key("selector"), sel);
                    }
                }
            }
        }
    }
}

/// Parses "addr/len" into (address, prefix length), checking the length fits the family.
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn git_source(c: &mut Checker, spec: &Path, s: &Json) {
    if let Some(url) = s.get("url").and_then(Json::as_str) {
        let ok = !url.trim().is_empty()
            && (url.starts_with("file://")
                || url.starts_with("https://")
                || url.starts_with("http://")
                || url.starts_with("ssh://")
                || url.starts_with('/')
                || url.starts_with("./")
                || url.starts_with("../")
                || (url.contains('@') && url.contains(':')));
        if !ok {
            c.error("nexus::invalid-url", &spec.key("url"), format!("unsupported repository URL {url:?}"), "not a git URL", "use a local path (/srv/git/app.git), file://, https:// or ssh:// (or git@host:org/repo.git)".into());
        }
    }
    if let Some(branch) = s.get("branch").and_then(Json::as_str) {
        let bad = branch.is_empty()
            || branch.contains("..")
            || branch.contains(|ch: char| ch.is_whitespace() || "~^:?*[\\".contains(ch))
            || branch.starts_with('/')
            || branch.ends_with('/')
            || branch.ends_with(".lock");
        if bad {
            c.error(
                "nexus::invalid-value",
                &spec.key("branch"),
                format!("invalid branch name {branch:?}"),
                "not a git branch name",
                "use a branch name such as \"main\" or \"release/1.4\"".into(),
            );
        }
    }
    if let Some(path) = s.get("path").and_then(Json::as_str)
        && (path.split('/').any(|p| p == "..") || path.starts_with('/'))
    {
        c.error(
            "nexus::invalid-value",
            &spec.key("path"),
            format!("path {path:?} leaves the repository"),
            "must stay inside the repository",
            "give a path relative to the repository root, e.g. \"deploy/prod\"".into(),
        );
    }
    if let Some(interval) = s.get("interval").and_then(Json::as_str) {
        match parse_duration_ms(interval) {
            Ok(ms) if ms < 1000 => c.error(
                "nexus::out-of-range",
                &spec.key("interval"),
                format!("interval {interval:?} is shorter than 1s"),
                "too short",
                "poll at most once a second; local repositories are also watched for changes"
                    .into(),
            ),
            Ok(_) => {}
            Err(e) => c.error(
                "nexus::invalid-duration",
                &spec.key("interval"),
                format!("invalid interval {interval:?}: {e}"),
                "not a duration",
                "write a duration such as \"30s\", \"1m\" or \"1m30s\"".into(),
            ),
        }
    }
    if let Some(signers) = s
        .get("verify")
        .and_then(|v| v.get("ssh"))
        .and_then(Json::as_array)
    {
        for (i, signer) in signers.iter().enumerate() {
            let Some(line) = signer.as_str() else {
                continue;
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 3
                || !parts[1].starts_with("ssh-")
                    && !parts[1].starts_with("ecdsa-")
                    && !parts[1].starts_with("sk-")
            {
                c.error("nexus::invalid-value", &spec.key("verify").key("ssh").index(i), "not an allowed-signers entry".into(), "expected \"principal key-type key\"", "write entries as in git's allowed_signers file: \"alice@example.com ssh-ed25519 AAAAC3Nza...\"".into());
            }
        }
    }
    if let Some(file) = s.get("webhookSecretFile").and_then(Json::as_str)
        && (file.trim().is_empty() || file.chars().any(char::is_control))
    {
        c.error(
            "nexus::invalid-value",
            &spec.key("webhookSecretFile"),
            format!("invalid secret file path {file:?}"),
            "not a file path",
            "name a file on the replicas, e.g. \"/etc/nexus/hooks/apps.secret\"".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "web", "api-v2", "0abc", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "Web", "a_b", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert_eq!(suggest_dns_label("My_App"), "my-app");
    }

    #[test]
    fn cidrs() {
        assert!(parse_cidr("10.0.0.0/8").is_some());
        assert!(parse_cidr("fd00::/64").is_some());
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("10.0.0.0").is_none());
    }
}
