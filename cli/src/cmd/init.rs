//! `nexus init`: creates a cluster CA, replica certificates and `server.yaml`s, an admin user
//! certificate, and a client context, so `nexus server` and `nexus apply` work right away.
//! With `--replicas N` (N > 1) every replica gets its own directory `<data>/rI/` with its
//! `server.yaml`, listening on consecutive ports from `--listen`, each naming the others as
//! peers with their validator keys.

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
    /// Address the replica listens on (the first one, with --replicas; the others take the
    /// following ports).
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: String,
    /// Control-plane replicas (validators): 1, or 3f+1 (4 tolerates one faulty replica).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
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
        Ok(yamls) => {
            let Some(server_yaml) = yamls.first().cloned() else {
                return exit::ERROR;
            };
            println!("Cluster {:?} initialised.", args.cluster);
            println!(
                "  CA:           {}",
                ClusterPaths::new(&args.cluster).ca_cert().display()
            );
            for y in &yamls {
                println!("  server:       {}", y.display());
            }
            println!(
                "  user:         {} (context {:?} is now current)",
                args.user, args.cluster
            );
            println!();
            for y in &yamls {
                println!(
                    "Start the control plane:   nexus server --config {}",
                    y.display()
                );
            }
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

fn init(args: &Args) -> Result<Vec<PathBuf>, ConfigError> {
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
    let n = args.replicas.max(1);
    let first: std::net::SocketAddr = args
        .listen
        .parse()
        .map_err(|_| ConfigError::Other(format!("--listen {:?} is not host:port", args.listen)))?;
    let mut members = Vec::new();
    for i in 0..n {
        let name = format!("r{i}");
        let leaf = ca
            .issue(&LeafRequest::new(
                Role::Replica,
                name.clone(),
                Validity::leaf_default(now),
            ))
            .map_err(pki)?;
        let rdir = data.join(&name);
        write_private(&rdir.join("tls.crt"), leaf.cert_pem().as_bytes())?;
        write_private(&rdir.join("tls.key"), leaf.key_pem().as_bytes())?;
        let port = first
            .port()
            .checked_add(i as u16)
            .ok_or_else(|| ConfigError::Other(format!("no port {} + {i}", first.port())))?;
        let listen = std::net::SocketAddr::new(first.ip(), port).to_string();
        members.push((name, listen, hex::encode(leaf.identity().public_key), rdir));
    }
    let mut yamls = Vec::new();
    for (name, listen, _, rdir) in &members {
        let server = ServerConfig {
            cluster: args.cluster.clone(),
            name: name.clone(),
            listen: listen.clone(),
            data_dir: rdir.clone(),
            ca: paths.ca_cert(),
            ca_key: paths.ca_key(),
            cert: rdir.join("tls.crt"),
            key: rdir.join("tls.key"),
            peers: members
                .iter()
                .filter(|(other, ..)| other != name)
                .map(|(other, addr, key, _)| crate::config::Peer {
                    name: other.clone(),
                    addr: addr.clone(),
                    public_key: Some(key.clone()),
                })
                .collect(),
            genesis: Vec::new(),
            join_tokens: Vec::new(),
            node_timeout: None,
            heartbeat: None,
            network_pool: None,
            gitops: None,
        };
        // One replica keeps the historical layout (`<data>/server.yaml`).
        let server_yaml = if n == 1 {
            data.join("server.yaml")
        } else {
            rdir.join("server.yaml")
        };
        server.save(&server_yaml)?;
        yamls.push(server_yaml);
    }

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
        servers: members.iter().map(|(_, l, ..)| l.clone()).collect(),
        server_name: "localhost".into(),
        ca: paths.ca_cert(),
        cert: paths.user_cert(&args.user),
        key: paths.user_key(&args.user),
    });
    cfg.save()?;
    Ok(yamls)
}
