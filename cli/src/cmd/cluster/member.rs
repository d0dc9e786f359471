//! `nexus cluster member add NAME --addr HOST:PORT --cert FILE` / `remove NAME`: validator-set
//! changes, written to the ledger like any other change (signed by the user) and taking effect
//! two heights after the entry that holds them (docs/membership.md).

use nexus_api::client::SubmitRequest;
use nexus_ledger::{Op, Source, Validator};

use crate::client::Session;
use crate::exit;

#[derive(Debug, clap::Subcommand)]
pub enum Member {
    /// Add a replica to the validator set. Start it first (with the cluster's genesis in its
    /// server.yaml) so it can catch up; it votes from the height the change takes effect.
    Add {
        /// The replica's name (its certificate must be `replica:NAME`).
        name: String,
        /// Where the other replicas reach it (host:port).
        #[arg(long)]
        addr: String,
        /// Its certificate (PEM), issued by the cluster CA: the validator key is its key.
        #[arg(long, value_name = "FILE")]
        cert: std::path::PathBuf,
        /// Voting power.
        #[arg(long, default_value_t = 1)]
        power: u64,
    },
    /// Remove a replica from the validator set (stop it once the change took effect).
    Remove { name: String },
}

fn validator(
    name: &str,
    addr: &str,
    cert: &std::path::Path,
    power: u64,
) -> Result<Validator, String> {
    let pem = std::fs::read_to_string(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let der = nexus_transport::pki::cert_der_from_pem(&pem)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let id = nexus_transport::Identity::from_cert_der(&der)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if id.role != nexus_transport::Role::Replica || id.name != name {
        return Err(format!(
            "{} is the certificate of {id}, not of replica:{name}",
            cert.display()
        ));
    }
    Ok(Validator {
        name: name.to_string(),
        public_key: id.public_key,
        address: addr.to_string(),
        power,
    })
}

pub fn run(m: Member, context: Option<&str>) -> u8 {
    let op = match &m {
        Member::Add {
            name,
            addr,
            cert,
            power,
        } => match validator(name, addr, cert, *power) {
            Ok(validator) => Op::AddValidator { validator },
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        },
        Member::Remove { name } => Op::RemoveValidator { name: name.clone() },
    };
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        let signed = session.sign(vec![op], Source::Cli);
        let req = SubmitRequest {
            signed: signed.to_bytes(),
        };
        match crate::cmd::apply::submit(&session, &req).await {
            Ok(r) => {
                let what = match &m {
                    Member::Add { name, .. } => format!("replica {name} joins"),
                    Member::Remove { name } => format!("replica {name} leaves"),
                };
                println!(
                    "validator-set change committed at height {}: {what} the validator set from height {}",
                    r.height,
                    r.height + nexus_ledger::replicated::MEMBERSHIP_DELAY
                );
                exit::OK
            }
            Err(code) => code,
        }
    })
}
