//! `nexus get KIND [NAME]`: live objects as a table, wide table, YAML or JSON; `--watch` streams
//! changes.

use clap::ValueEnum;
use nexus_api::client::{GetRequest, GetResponse, ObjectInfo, Selector, WatchEvent, WatchRequest};
use nexus_api::kinds;
use nexus_schemas::Kind;
use serde_json::Value;

use super::apply::parse_labels;
use crate::client::{Session, explain};
use crate::exit;
use crate::table::Table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetFormat {
    Table,
    Wide,
    Yaml,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kind (workload, service, networkpolicy, gitsource; plurals and short names work), or `all`.
    pub kind: String,
    /// Only this object.
    pub name: Option<String>,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Label selector (`app=web,tier=frontend`).
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = GetFormat::Table)]
    pub output: GetFormat,
    /// Keep streaming changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Read through the log instead of the replica's local state.
    #[arg(long)]
    pub consistent: bool,
}

pub fn run(args: Args, context: Option<&str>) -> u8 {
    let kind = if args.kind == "all" {
        None
    } else {
        match Kind::parse(&args.kind) {
            Some(k) => Some(k.as_str().to_string()),
            None => {
                eprintln!(
                    "error: unknown kind {:?}; kinds are workload, service, networkpolicy, gitsource (or all)",
                    args.kind
                );
                return exit::ERROR;
            }
        }
    };
    let labels = match args.selector.as_deref().map(parse_labels).transpose() {
        Ok(l) => l.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let selector = Selector {
        kind,
        namespace: args.namespace.clone(),
        name: args.name.clone(),
        labels,
    };
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        if args.watch {
            return watch(&session, selector, args.output).await;
        }
        let resp: GetResponse = match session
            .call(
                kinds::GET,
                &GetRequest {
                    selector,
                    consistent: args.consistent,
                },
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}", explain(&e));
                return exit::ERROR;
            }
        };
        if resp.objects.is_empty() && args.name.is_some() {
            eprintln!(
                "error: {} {:?} not found",
                args.kind,
                args.name.unwrap_or_default()
            );
            return exit::INVALID;
        }
        print!("{}", render(&resp.objects, args.output));
        for w in policy_warnings(&resp.objects) {
            eprintln!("warning: {w}");
        }
        if resp.objects.is_empty() && args.output == GetFormat::Table {
            eprintln!("No objects found.");
        }
        exit::OK
    })
}

async fn watch(session: &Session, selector: Selector, output: GetFormat) -> u8 {
    let mut stream = match session
        .client
        .call_stream::<_, WatchEvent>(kinds::WATCH, &WatchRequest { selector })
        .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", explain(&e));
            return exit::ERROR;
        }
    };
    let mut header = true;
    while let Some(item) = stream.next().await {
        match item {
            Ok(ev) => {
                let Some(obj) = ev.object else { continue };
                match output {
                    GetFormat::Json => println!(
                        "{}",
                        serde_json::json!({"type": ev.event_type, "height": ev.height, "object": obj})
                    ),
                    GetFormat::Yaml => print!(
                        "---\n# {} at height {}\n{}",
                        ev.event_type,
                        ev.height,
                        yaml(&obj.object)
                    ),
                    GetFormat::Table | GetFormat::Wide => {
                        let mut t =
                            table_for(std::slice::from_ref(&obj), output == GetFormat::Wide, true);
                        t.set_event(&ev.event_type);
                        print!("{}", t.render_rows(header));
                        header = false;
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {}", explain(&e));
                return exit::ERROR;
            }
        }
    }
    exit::OK
}

fn yaml(v: &Value) -> String {
    serde_saphyr::to_string(v)
        .unwrap_or_else(|_| serde_json::to_string_pretty(v).unwrap_or_default())
}

/// Renders objects in the chosen format.
pub fn render(objects: &[ObjectInfo], output: GetFormat) -> String {
    match output {
        GetFormat::Json => serde_json::to_string_pretty(objects).unwrap_or_default() + "\n",
        GetFormat::Yaml => objects
            .iter()
            .map(|o| format!("---\n{}", yaml(&o.object)))
            .collect(),
        GetFormat::Table | GetFormat::Wide => {
            table_for(objects, output == GetFormat::Wide, false).render()
        }
    }
}

fn s(v: &Value, p: &str) -> String {
    match v.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn labels_text(v: Option<&Value>) -> String {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The live status in one cell: a workload's nodes (and first problem), a service's endpoints.
fn live_text(o: &ObjectInfo) -> String {
    let Some(st) = &o.status else {
        return String::new();
    };
    let list = |p: &str| {
        st.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    match s(&o.object, "/kind").as_str() {
        "Workload" => {
            let mut t = format!("nodes={}", list("/nodes"));
            if let Some(p) = st.pointer("/problems/0").and_then(Value::as_str) {
                t.push_str(&format!(" ({p})"));
            }
            t
        }
        "Service" => format!("endpoints={}", list("/endpoints")),
        "NetworkPolicy" => {
            let mut t = format!("enforced={}", list("/enforcedOn"));
            let pending = list("/pendingOn");
            if !pending.is_empty() {
                t.push_str(&format!(" pending={pending}"));
            }
            if let Some(n) = st.pointer("/notEnforced").and_then(Value::as_array)
                && !n.is_empty()
            {
                t.push_str(&format!(" ({} node(s) NOT enforcing)", n.len()));
            }
            t
        }
        _ => String::new(),
    }
}

/// One warning per node that cannot enforce network policy (printed to stderr with every `get`
/// that lists NetworkPolicies: policy is never silently ignored).
pub fn policy_warnings(objects: &[ObjectInfo]) -> Vec<String> {
    let mut out: Vec<String> = objects
        .iter()
        .filter(|o| s(&o.object, "/kind") == "NetworkPolicy")
        .filter_map(|o| {
            o.status
                .as_ref()?
                .pointer("/notEnforced")?
                .as_array()
                .cloned()
        })
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn table_for(objects: &[ObjectInfo], wide: bool, event: bool) -> Table {
    let mut headers: Vec<&str> = Vec::new();
    if event {
        headers.push("EVENT");
    }
    headers.extend([
        "KIND",
        "NAMESPACE",
        "NAME",
        "DETAIL",
        "GEN",
        "VERSION",
        "OWNER",
    ]);
    if wide {
        headers.extend(["LIVE", "LABELS", "LAST ACTOR", "HASH"]);
    }
    let mut t = Table::new(&headers);
    for o in objects {
        let v = &o.object;
        let kind = s(v, "/kind");
        let detail = match kind.as_str() {
            "Workload" => {
                let ready = o
                    .status
                    .as_ref()
                    .and_then(|st| st.get("ready"))
                    .and_then(Value::as_u64);
                let want = s(v, "/spec/replicas");
                match ready {
                    Some(r) => format!("{r}/{want} ready"),
                    None => format!("{want} replicas"),
                }
            }
            "Service" => {
                let ports = v
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|p| s(p, "/port"))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                format!("{} -> {ports}", labels_text(v.pointer("/spec/selector")))
            }
            "NetworkPolicy" => format!("selects {}", labels_text(v.pointer("/spec/selector"))),
            "GitSource" => format!("{}@{}", s(v, "/spec/url"), s(v, "/spec/branch")),
            _ => String::new(),
        };
        let mut row = Vec::new();
        if event {
            row.push(String::new());
        }
        row.extend([
            kind,
            s(v, "/metadata/namespace"),
            s(v, "/metadata/name"),
            detail,
            o.generation.to_string(),
            o.resource_version.to_string(),
            o.owner.clone(),
        ]);
        if wide {
            row.extend([
                live_text(o),
                labels_text(v.pointer("/metadata/labels")),
                o.last_actor.clone(),
                o.content_hash.chars().take(12).collect(),
            ]);
        }
        t.row(row);
    }
    t
}
