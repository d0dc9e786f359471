//! `nexus user create NAME`: issues a user certificate signed by the cluster CA. The identity in
//! the ledger is the certificate subject (`user:NAME`).

use std::time::SystemTime;

use nexus_transport::pki::{CertificateAuthority, LeafRequest, Role, Validity};

use super::init::ClusterPaths;
use crate::config::{ClientConfig, ConfigError, Context, read_text, write_private};
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Issue a certificate for a new user (needs the cluster CA key, which `nexus init` wrote).
    Create {
        /// User name (letters, digits, '.', '_', '@', '-').
        name: String,
        /// Cluster whose CA signs the certificate (default: the current context's cluster).
        #[arg(long)]
        cluster: Option<String>,
        /// Also add a context NAME@CLUSTER to this machine's config.
        #[arg(long)]
        add_context: bool,
        /// Certificate lifetime in days.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
}

pub fn run(args: Args, context: Option<&str>) -> u8 {
    match args.action {
        Action::Create {
            name,
            cluster,
            add_context,
            days,
        } => match create(&name, cluster, add_context, days, context) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("error: {e}");
                exit::ERROR
            }
        },
    }
}

fn create(
    name: &str,
    cluster: Option<String>,
    add_context: bool,
    days: u64,
    context: Option<&str>,
) -> Result<(), ConfigError> {
    nexus_transport::init_crypto();
    let mut cfg = ClientConfig::load()?;
    let base = cfg.resolve(context).ok().cloned();
    let cluster = match (cluster, &base) {
        (Some(c), _) => c,
        (None, Some(ctx)) => ctx.cluster.clone(),
        (None, None) => {
            return Err(ConfigError::Other(
                "no cluster given and no current context; pass --cluster".into(),
            ));
        }
    };
    let paths = ClusterPaths::new(&cluster);
    let ca =
        CertificateAuthority::from_pem(&read_text(&paths.ca_cert())?, &read_text(&paths.ca_key())?)
            .map_err(|e| {
                ConfigError::Other(format!("cannot load the CA of cluster {cluster:?}: {e}"))
            })?;
    if paths.user_cert(name).exists() {
        return Err(ConfigError::Other(format!(
            "user {name:?} already has a certificate at {}",
            paths.user_cert(name).display()
        )));
    }
    let validity = Validity::starting_at(
        SystemTime::now(),
        std::time::Duration::from_secs(days.max(1) * 86_400),
    );
    let leaf = ca
        .issue(&LeafRequest::new(Role::User, name, validity))
        .map_err(|e| ConfigError::Other(e.to_string()))?;
    write_private(&paths.user_cert(name), leaf.cert_pem().as_bytes())?;
    write_private(&paths.user_key(name), leaf.key_pem().as_bytes())?;
    println!("Issued user:{name} for cluster {cluster:?}:");
    println!("  certificate: {}", paths.user_cert(name).display());
    println!("  key:         {}", paths.user_key(name).display());
    if add_context {
        let servers = base.as_ref().map(|b| b.servers.clone()).unwrap_or_default();
        let ctx_name = format!("{name}@{cluster}");
        cfg.contexts.retain(|c| c.name != ctx_name);
        cfg.contexts.push(Context {
            name: ctx_name.clone(),
            cluster: cluster.clone(),
            servers,
            server_name: "localhost".into(),
            ca: paths.ca_cert(),
            cert: paths.user_cert(name),
            key: paths.user_key(name),
        });
        cfg.save()?;
        println!("  context:     {ctx_name} (use --context {ctx_name})");
    }
    Ok(())
}
