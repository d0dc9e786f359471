//! `nexus init`: creates a cluster CA, a replica certificate and `server.yaml`, an admin user
//! certificate, and a client context, so `nexus server` and `nexus apply` work right away.

use std::path::PathBuf;
use std::time::SystemTime;

use nexus_transport::pki::{CertificateAuthority, LeafRequest, Role, Validity};

use crate::config::{
    ClientConfig, ConfigError, Context, ServerConfig, config_dir, data_dir, write_private,
};
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cluster name (also the context name).
    #[arg(long, default_value = "local")]
    pub cluster: String,
    /// Address the replica listens on.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: String,
    /// Name of the admin user certificate.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// Server state directory (default: $XDG_DATA_HOME/nexus/<cluster>).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Replace an existing cluster of the same name (its CA and certificates are regenerated).
    #[arg(long)]
    pub force: bool,
}

/// Paths of one cluster's material under the config directory.
pub struct ClusterPaths {
    pub dir: PathBuf,
}

impl ClusterPaths {
    pub fn new(cluster: &str) -> Self {
        ClusterPaths {
            dir: config_dir().join("clusters").join(cluster),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn user_cert(&self, user: &str) -> PathBuf {
        self.dir.join("users").join(format!("{user}.crt"))
    }
    pub fn user_key(&self, user: &str) -> PathBuf {
        self.dir.join("users").join(format!("{user}.key"))
    }
}

pub fn run(args: Args) -> u8 {
    match init(&args) {
        Ok(server_yaml) => {
            println!("Cluster {:?} initialised.", args.cluster);
            println!(
                "  CA:           {}",
                ClusterPaths::new(&args.cluster).ca_cert().display()
            );
            println!("  server:       {}", server_yaml.display());
            println!(
                "  user:         {} (context {:?} is now current)",
                args.user, args.cluster
            );
            println!();
            println!(
                "Start the control plane:   nexus server --config {}",
                server_yaml.display()
            );
            println!(
                "Add a node (as root):      nexus agent --join {} --token $(nexus token create --config {})",
                args.listen,
                server_yaml.display()
            );
            println!("Then apply the examples:   nexus apply -f manifests/examples --wait");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

fn init(args: &Args) -> Result<PathBuf, ConfigError> {
    nexus_transport::init_crypto();
    let paths = ClusterPaths::new(&args.cluster);
    if paths.ca_cert().exists() && !args.force {
        return Err(ConfigError::Other(format!(
            "cluster {:?} already exists at {}; use --force to replace it, or --cluster to choose another name",
            args.cluster,
            paths.dir.display()
        )));
    }
    let now = SystemTime::now();
    let pki = |e: nexus_transport::pki::PkiError| ConfigError::Other(e.to_string());
    let ca =
        CertificateAuthority::generate(&args.cluster, Validity::ca_default(now)).map_err(pki)?;
    write_private(&paths.ca_cert(), ca.cert_pem().as_bytes())?;
    write_private(&paths.ca_key(), ca.key_pem().as_bytes())?;

    let data = args
        .data_dir
        .clone()
        .unwrap_or_else(|| data_dir().join(&args.cluster));
    let replica = ca
        .issue(&LeafRequest::new(
            Role::Replica,
            "r0",
            Validity::leaf_default(now),
        ))
        .map_err(pki)?;
    let rdir = data.join("r0");
    write_private(&rdir.join("tls.crt"), replica.cert_pem().as_bytes())?;
    write_private(&rdir.join("tls.key"), replica.key_pem().as_bytes())?;
    let server = ServerConfig {
        cluster: args.cluster.clone(),
        name: "r0".into(),
        listen: args.listen.clone(),
        data_dir: rdir.clone(),
        ca: paths.ca_cert(),
        ca_key: paths.ca_key(),
        cert: rdir.join("tls.crt"),
        key: rdir.join("tls.key"),
        peers: Vec::new(),
        join_tokens: Vec::new(),
        node_timeout: None,
        heartbeat: None,
        network_pool: None,
        gitops: None,
    };
    let server_yaml = data.join("server.yaml");
    server.save(&server_yaml)?;

    let user = ca
        .issue(&LeafRequest::new(
            Role::User,
            args.user.clone(),
            Validity::leaf_default(now),
        ))
        .map_err(pki)?;
    write_private(&paths.user_cert(&args.user), user.cert_pem().as_bytes())?;
    write_private(&paths.user_key(&args.user), user.key_pem().as_bytes())?;

    let mut cfg = ClientConfig::load()?;
    cfg.upsert(Context {
        name: args.cluster.clone(),
        cluster: args.cluster.clone(),
        servers: vec![args.listen.clone()],
        server_name: "localhost".into(),
        ca: paths.ca_cert(),
        cert: paths.user_cert(&args.user),
        key: paths.user_key(&args.user),
    });
    cfg.save()?;
    Ok(server_yaml)
}
