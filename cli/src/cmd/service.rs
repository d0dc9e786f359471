//! `nexus service deploy COMMAND_OR_IMAGE --name NAME --replicas N [--port P]`: writes a
//! Workload (and, with `--port`, a Service) manifest and applies it, like `apply -f` would.
//! `--dry-run` prints the manifests instead.

use std::time::Duration;

use nexus_schemas::SourceFile;

use crate::client::Session;
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Deploy a command (or an OCI image with --image) as a workload, plus a service with --port.
    Deploy(DeployArgs),
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The command (one shell string, or several words after `--`), or an image with --image.
    #[arg(required = true, num_args = 1.., value_name = "COMMAND_OR_IMAGE")]
    pub command: Vec<String>,
    #[arg(long)]
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Treat the argument as an OCI image reference (`runtime: oci`).
    #[arg(long)]
    pub image: bool,
    /// CPU limit per replica (`500m`, `2`).
    #[arg(long)]
    pub cpu_limit: Option<String>,
    /// Memory limit per replica (`256Mi`).
    #[arg(long)]
    pub memory_limit: Option<String>,
    /// Port the replicas listen on: adds a TCP health probe and a Service.
    #[arg(long)]
    pub port: Option<u16>,
    /// Environment variables (`KEY=VALUE`, repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Print the manifests instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait until the replicas are ready.
    #[arg(long)]
    pub wait: bool,
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default() // JSON strings are valid YAML scalars
}

/// The command a single argument stands for: `sh -c ARG` when it uses shell syntax, else its
/// whitespace-separated words.
pub fn command_words(args: &[String]) -> Vec<String> {
    if args.len() > 1 {
        return args.to_vec();
    }
    let one = args.first().map(String::as_str).unwrap_or_default();
    if one.chars().any(|c| "|&;<>()$`'\"\\*?~".contains(c)) {
        vec!["sh".into(), "-c".into(), one.into()]
    } else {
        one.split_whitespace().map(str::to_string).collect()
    }
}

/// The manifests `deploy` applies.
pub fn manifests(a: &DeployArgs) -> Result<String, String> {
    let mut w = format!(
        "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {name}\nspec:\n  replicas: {r}\n",
        name = a.name,
        ns = a.namespace,
        r = a.replicas
    );
    if a.image {
        let image = a.command.join(" ");
        w.push_str(&format!("  runtime: oci\n  image: {}\n", yaml_str(&image)));
    } else {
        let words = command_words(&a.command);
        if words.is_empty() {
            return Err("the command is empty".into());
        }
        w.push_str("  command:\n");
        for word in words {
            w.push_str(&format!("    - {}\n", yaml_str(&word)));
        }
    }
    if !a.env.is_empty() {
        w.push_str("  env:\n");
        for e in &a.env {
            let (k, v) = e
                .split_once('=')
                .ok_or_else(|| format!("--env {e:?}: expected KEY=VALUE"))?;
            w.push_str(&format!("    {}: {}\n", yaml_str(k), yaml_str(v)));
        }
    }
    if a.cpu_limit.is_some() || a.memory_limit.is_some() {
        w.push_str("  resources:\n");
        if let Some(c) = &a.cpu_limit {
            w.push_str(&format!("    cpu: {}\n", yaml_str(c)));
        }
        if let Some(m) = &a.memory_limit {
            w.push_str(&format!("    memory: {}\n", yaml_str(m)));
        }
    }
    if let Some(p) = a.port {
        w.push_str(&format!(
            "  ports:\n    - name: main\n      port: {p}\n  health:\n    tcp:\n      port: {p}\n    periodSeconds: 2\n---\napiVersion: nexus/v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  selector:\n    app: {name}\n  ports:\n    - name: main\n      port: {p}\n",
            name = a.name,
            ns = a.namespace
        ));
    }
    Ok(w)
}

pub fn run(args: Args, context: Option<&str>) -> u8 {
    let What::Deploy(a) = args.what;
    let text = match manifests(&a) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    if a.dry_run {
        print!("{text}");
        return exit::OK;
    }
    let file = SourceFile::from_text("<service deploy>", &text);
    let ops = match super::apply::generated_ops(&file) {
        Ok(ops) => ops,
        Err(code) => return code,
    };
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        if let Err(code) = super::apply::submit_ops(&session, ops).await {
            return code;
        }
        if !a.wait {
            return exit::OK;
        }
        let names = vec![(a.namespace.clone(), a.name.clone())];
        match super::wait::until_ready(&session, &names, Duration::from_secs(300)).await {
            Ok(_) => {
                eprintln!("workload/{} ready: {} replicas", a.name, a.replicas);
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::INVALID
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &[&str]) -> DeployArgs {
        DeployArgs {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            name: "hello".into(),
            namespace: "default".into(),
            replicas: 3,
            image: false,
            cpu_limit: Some("250m".into()),
            memory_limit: Some("64Mi".into()),
            port: Some(8080),
            env: vec!["GREETING=hi there".into()],
            dry_run: true,
            wait: false,
        }
    }

    #[test]
    fn manifests_validate() {
        for cmd in [
            &["python3 -m http.server 8080"][..],
            &["echo $HOME && sleep 100"],
            &["python3", "-c", "print('x')"],
        ] {
            let text = manifests(&args(cmd)).unwrap();
            let v = nexus_schemas::validate_sources(&[SourceFile::from_text("t", &text)]);
            assert!(!v.has_errors(), "{text}\n{:?}", v.diagnostics);
            assert_eq!(v.objects.len(), 2);
        }
        assert_eq!(
            command_words(&["echo $HOME".into()]),
            ["sh", "-c", "echo $HOME"]
        );
        assert_eq!(command_words(&["sleep 5".into()]), ["sleep", "5"]);
    }
}
