//! `nexus network policy create NAME --selector app=api --allow-ingress "from=app=web,ports=8080"
//! [--allow-egress ...] [--deny-all]`: writes a NetworkPolicy manifest from flags and applies it
//! like `apply -f` would (`--dry-run` prints it instead).
//!
//! A rule is a comma-separated list of `from=SELECTOR` / `to=SELECTOR` (labels joined with `&`,
//! `*` for every workload of the namespace; an optional `NAMESPACE/` in front), `cidr=RANGE`
//! and `ports=PORT[/udp][;PORT...]`; several peers may be given in one rule. No peer means any
//! peer, no port every port.

use nexus_schemas::SourceFile;
use serde_json::{Value, json};

use crate::client::Session;
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Network policies.
    #[command(subcommand)]
    Policy(Policy),
}

#[derive(Debug, clap::Subcommand)]
pub enum Policy {
    /// Write a NetworkPolicy from flags and apply it.
    Create(CreateArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The workloads the policy applies to (`app=api,tier=backend`; empty: every workload).
    #[arg(long, default_value = "")]
    pub selector: String,
    /// Allow incoming traffic: `from=app=web,ports=8080` (repeatable; isolates ingress).
    #[arg(long = "allow-ingress", value_name = "RULE")]
    pub allow_ingress: Vec<String>,
    /// Allow outgoing traffic: `to=app=db,ports=5432` (repeatable; isolates egress).
    #[arg(long = "allow-egress", value_name = "RULE")]
    pub allow_egress: Vec<String>,
    /// Isolate both directions: only what the --allow rules list passes (with no rules,
    /// nothing does).
    #[arg(long)]
    pub deny_all: bool,
    /// Print the manifest instead of applying it.
    #[arg(long)]
    pub dry_run: bool,
}

fn labels(text: &str, sep: char) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    for pair in text.split(sep).map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected key=value"))?;
        out.insert(k.trim().to_string(), json!(v.trim()));
    }
    Ok(Value::Object(out))
}

/// One `--allow-*` rule as the manifest's rule object (`peers` is `from` or `to`).
pub fn rule(text: &str, peers: &str) -> Result<Value, String> {
    let mut list = Vec::new();
    let mut ports = Vec::new();
    for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?}: expected {peers}=..., cidr=... or ports=..."))?;
        match key.trim() {
            k if k == peers => {
                let (namespace, selector) = match value.split_once('/') {
                    Some((ns, sel)) => (Some(ns), sel),
                    None => (None, value),
                };
                let selector = if selector.trim() == "*" {
                    json!({})
                } else {
                    labels(selector, '&')?
                };
                let mut peer = json!({ "selector": selector });
                if let Some(ns) = namespace {
                    peer["namespace"] = json!(ns);
                }
                list.push(peer);
            }
            "cidr" => list.push(json!({ "cidr": value.trim() })),
            "ports" | "port" => {
                for p in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                    let (num, proto) = match p.split_once('/') {
                        Some((n, pr)) => (n, pr.to_ascii_uppercase()),
                        None => (p, "TCP".to_string()),
                    };
                    let port: u32 = num
                        .parse()
                        .map_err(|_| format!("{p:?}: a port is a number (8080, 53/udp)"))?;
                    ports.push(json!({ "port": port, "protocol": proto }));
                }
            }
            other => {
                return Err(format!(
                    "unknown field {other:?} in {text:?}; expected {peers}=, cidr= or ports="
                ));
            }
        }
    }
    let mut r = serde_json::Map::new();
    if !list.is_empty() {
        r.insert(peers.into(), Value::Array(list));
    }
    if !ports.is_empty() {
        r.insert("ports".into(), Value::Array(ports));
    }
    Ok(Value::Object(r))
}

/// The NetworkPolicy manifest the flags describe, as YAML.
pub fn manifest(a: &CreateArgs) -> Result<String, String> {
    let ingress = a
        .allow_ingress
        .iter()
        .map(|r| rule(r, "from").map_err(|e| format!("--allow-ingress: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let egress = a
        .allow_egress
        .iter()
        .map(|r| rule(r, "to").map_err(|e| format!("--allow-egress: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut spec =
        json!({ "selector": labels(&a.selector, ',').map_err(|e| format!("--selector: {e}"))? });
    let mut types = Vec::new();
    if a.deny_all || !ingress.is_empty() {
        types.push("Ingress");
        spec["ingress"] = Value::Array(ingress);
    }
    if a.deny_all || !egress.is_empty() {
        types.push("Egress");
        spec["egress"] = Value::Array(egress);
    }
    if types.is_empty() {
        return Err("nothing to do: give --allow-ingress, --allow-egress or --deny-all".into());
    }
    spec["policyTypes"] = json!(types);
    let doc = json!({
        "apiVersion": "nexus/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": a.name, "namespace": a.namespace},
        "spec": spec,
    });
    serde_saphyr::to_string(&doc).map_err(|e| e.to_string())
}

pub fn run(args: Args, context: Option<&str>) -> u8 {
    let What::Policy(Policy::Create(a)) = args.what;
    let yaml = match manifest(&a) {
        Ok(y) => y,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let file = SourceFile::from_text(format!("networkpolicy/{}", a.name), yaml.clone());
    let ops = match super::apply::generated_ops(&file) {
        Ok(ops) => ops,
        Err(code) => return code,
    };
    if a.dry_run {
        print!("{yaml}");
        return exit::OK;
    }
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        match super::apply::submit_ops(&session, ops).await {
            Ok(_) => {
                eprintln!(
                    "`nexus debug troubleshoot WORKLOAD --network` shows what it allows on every node"
                );
                exit::OK
            }
            Err(code) => code,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ingress: &[&str], egress: &[&str], deny_all: bool) -> CreateArgs {
        CreateArgs {
            name: "api-policy".into(),
            namespace: "default".into(),
            selector: "app=api".into(),
            allow_ingress: ingress.iter().map(|s| s.to_string()).collect(),
            allow_egress: egress.iter().map(|s| s.to_string()).collect(),
            deny_all,
            dry_run: true,
        }
    }

    fn spec_of(a: &CreateArgs) -> nexus_schemas::NetworkPolicySpec {
        let yaml = manifest(a).unwrap();
        let v = nexus_schemas::validate_sources(&[SourceFile::from_text("t", &yaml)]);
        assert!(!v.has_errors(), "{yaml}\n{:?}", v.diagnostics);
        match &v.objects[0].object.spec {
            nexus_schemas::Spec::NetworkPolicy(s) => s.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_become_a_valid_policy() {
        let s = spec_of(&args(&["from=app=web,ports=8080"], &[], false));
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(
            j,
            json!({
                "selector": {"app": "api"},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"selector": {"app": "web"}}], "ports": [{"port": 8080, "protocol": "TCP"}]}],
                "egress": [],
            })
        );
        let s = spec_of(&args(
            &["from=app=web&tier=front,from=ops/*,cidr=10.0.0.0/8,ports=8080;53/udp"],
            &["to=app=db,ports=5432"],
            false,
        ));
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(
            j["ingress"][0]["from"],
            json!([
                {"selector": {"app": "web", "tier": "front"}},
                {"selector": {}, "namespace": "ops"},
                {"cidr": "10.0.0.0/8"}
            ])
        );
        assert_eq!(
            j["ingress"][0]["ports"],
            json!([{"port": 8080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}])
        );
        assert_eq!(j["policyTypes"], json!(["Ingress", "Egress"]));
        let s = spec_of(&args(&[], &[], true));
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            (j["ingress"].clone(), j["egress"].clone()),
            (json!([]), json!([]))
        );
    }

    #[test]
    fn bad_flags_say_what_is_expected() {
        let e = manifest(&args(&["from=app=web,port=http"], &[], false)).unwrap_err();
        assert!(e.contains("a port is a number"), "{e}");
        let e = manifest(&args(&["src=app=web"], &[], false)).unwrap_err();
        assert!(
            e.starts_with("--allow-ingress: unknown field \"src\""),
            "{e}"
        );
        let e = manifest(&args(&[], &[], false)).unwrap_err();
        assert!(e.contains("nothing to do"), "{e}");
        // Out-of-range ports are caught by validation, with the generated file's location.
        let yaml = manifest(&args(&["ports=70000"], &[], false)).unwrap();
        let v = nexus_schemas::validate_sources(&[SourceFile::from_text("t", &yaml)]);
        assert!(v.has_errors());
    }
}
