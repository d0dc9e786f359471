//! `nexus logs workload/NAME [-f] [--replica I]`: a workload's output, streamed from the agents
//! that run its replicas through the control plane. With several replicas every line is
//! prefixed with the replica's host name (`web-1`); stderr goes to stderr.

use std::collections::BTreeMap;
use std::io::Write;

use nexus_api::agent::{LogItem, LogsRequest, Stream, kinds};

use crate::client::{Session, explain};
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `workload/NAME` (or just NAME).
    pub target: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Keep streaming what the replicas write.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only this replica index.
    #[arg(long)]
    pub replica: Option<u32>,
    /// Start with at most this many bytes of each stream's end.
    #[arg(long, default_value_t = 256 * 1024)]
    pub tail_bytes: u64,
    /// Never prefix lines with the replica name.
    #[arg(long)]
    pub no_prefix: bool,
}

/// Splits `workload/NAME`, `wl/NAME` or `NAME`.
pub fn workload_name(target: &str) -> Result<String, String> {
    match target.split_once('/') {
        None => Ok(target.to_string()),
        Some((kind, name)) => match nexus_schemas::Kind::parse(kind) {
            Some(nexus_schemas::Kind::Workload) => Ok(name.to_string()),
            _ => Err(format!(
                "{target:?}: logs come from workloads (workload/NAME)"
            )),
        },
    }
}

/// Buffers partial lines per (replica, stream) so prefixes go at line starts.
#[derive(Default)]
struct Printer {
    partial: BTreeMap<(u32, bool), Vec<u8>>,
    prefix: bool,
}

impl Printer {
    fn emit(&mut self, item: &LogItem, name: &str) {
        let err = item.stream == Stream::Stderr;
        let buf = self.partial.entry((item.replica, err)).or_default();
        buf.extend_from_slice(&item.data);
        let mut out: Vec<u8> = Vec::new();
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if self.prefix {
                out.extend_from_slice(format!("[{name}-{}] ", item.replica).as_bytes());
            }
            out.extend_from_slice(&line);
        }
        if item.eof && !buf.is_empty() {
            if self.prefix {
                out.extend_from_slice(format!("[{name}-{}] ", item.replica).as_bytes());
            }
            out.append(buf);
            out.push(b'\n');
        }
        if err {
            let _ = std::io::stderr().write_all(&out);
        } else {
            let mut o = std::io::stdout();
            let _ = o.write_all(&out);
            let _ = o.flush();
        }
    }
}

pub fn run(args: Args, context: Option<&str>) -> u8 {
    let name = match workload_name(&args.target) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        let req = LogsRequest {
            namespace: args.namespace.clone(),
            name: name.clone(),
            replica: args.replica,
            follow: args.follow,
            tail_bytes: args.tail_bytes,
        };
        let mut stream = match session
            .client
            .call_stream::<_, LogItem>(kinds::LOGS, &req)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {}", explain(&e));
                return exit::ERROR;
            }
        };
        let mut printer = Printer {
            prefix: args.replica.is_none() && !args.no_prefix,
            ..Default::default()
        };
        let mut code = exit::OK;
        loop {
            let item = tokio::select! {
                i = stream.next() => i,
                _ = crate::wait_for_shutdown_signal() => break,
            };
            match item {
                None => break,
                Some(Ok(item)) => {
                    if let Some(e) = &item.error {
                        eprintln!("error: {name}-{} on {}: {e}", item.replica, item.node);
                        code = exit::ERROR;
                    }
                    printer.emit(&item, &name);
                }
                Some(Err(e)) => {
                    eprintln!("error: {}", explain(&e));
                    return exit::ERROR;
                }
            }
        }
        code
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(workload_name("workload/web").unwrap(), "web");
        assert_eq!(workload_name("web").unwrap(), "web");
        assert!(workload_name("service/web").is_err());
    }
}
