//! Serving a log request from a replica: for each instance, the tail of stdout and stderr, then
//! (when following) whatever is appended to the current log files, polled every 250 ms and
//! followed across rotation. Chunks go back with `nexus.agent.log_chunk`; the replica answers
//! `keep_going: false` when the CLI went away.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use nexus_api::agent::{LogChunk, LogChunkAck, LogRequest, Stream, kinds};
use nexus_reconciler::model::InstanceId;
use nexus_reconciler::runtime::LogStream;
use nexus_transport::rpc::RpcClient;

use crate::{Agent, lock};

/// Largest chunk sent at once.
const CHUNK: usize = 64 * 1024;
const POLL: Duration = Duration::from_millis(250);

pub(crate) fn serve(agent: &Arc<Agent>, client: RpcClient, req: LogRequest) {
    let mut handles = Vec::new();
    for id in req.instances.clone() {
        let t = tokio::spawn(instance(agent.clone(), client.clone(), req.clone(), id));
        handles.push(t.abort_handle());
    }
    lock(&agent.log_tasks)
        .entry(req.session)
        .or_default()
        .extend(handles);
}

fn wire(s: LogStream) -> Stream {
    match s {
        LogStream::Stdout => Stream::Stdout,
        LogStream::Stderr => Stream::Stderr,
    }
}

async fn send(
    client: &RpcClient,
    session: u64,
    id: &InstanceId,
    stream: LogStream,
    data: Vec<u8>,
    eof: bool,
    error: Option<String>,
) -> bool {
    let chunk = LogChunk {
        session,
        instance: id.clone(),
        stream: wire(stream),
        data,
        eof,
        error,
    };
    matches!(
        client
            .call::<_, LogChunkAck>(kinds::LOG_CHUNK, &chunk)
            .await,
        Ok(LogChunkAck { keep_going: true })
    )
}

async fn send_all(
    client: &RpcClient,
    session: u64,
    id: &InstanceId,
    stream: LogStream,
    data: &[u8],
) -> bool {
    for part in data.chunks(CHUNK) {
        if !send(client, session, id, stream, part.to_vec(), false, None).await {
            return false;
        }
    }
    true
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn read_from(path: &std::path::Path, offset: u64, max: u64) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.take(max).read_to_end(&mut out);
    }
    out
}

async fn instance(agent: Arc<Agent>, client: RpcClient, req: LogRequest, id: InstanceId) {
    let session = req.session;
    let streams = [LogStream::Stdout, LogStream::Stderr];
    // Where each followed file was read up to.
    let mut offsets = [0u64; 2];
    for (i, s) in streams.into_iter().enumerate() {
        let rt = agent.runtime.clone();
        let id2 = id.clone();
        let tail = req.tail_bytes;
        let got = tokio::task::spawn_blocking(move || {
            let file = rt.log_file(&id2, s);
            let len = file.as_deref().map_or(0, file_len);
            (rt.logs(&id2, s, tail), len)
        })
        .await;
        let Ok((data, len)) = got else { return };
        offsets[i] = len;
        match data {
            Ok(d) => {
                if !send_all(&client, session, &id, s, &d).await {
                    return;
                }
            }
            Err(e) => {
                send(
                    &client,
                    session,
                    &id,
                    s,
                    Vec::new(),
                    true,
                    Some(e.to_string()),
                )
                .await;
                return;
            }
        }
    }
    if req.follow {
        let files: Vec<_> = streams
            .iter()
            .map(|s| agent.runtime.log_file(&id, *s))
            .collect();
        loop {
            tokio::time::sleep(POLL).await;
            let gone = !agent.status.borrow().iter().any(|r| r.id == id);
            for (i, s) in streams.into_iter().enumerate() {
                let Some(path) = &files[i] else { continue };
                let len = file_len(path);
                if len < offsets[i] {
                    offsets[i] = 0; // rotated
                }
                if len > offsets[i] {
                    let p = path.clone();
                    let (from, max) = (offsets[i], len - offsets[i]);
                    let data = tokio::task::spawn_blocking(move || read_from(&p, from, max))
                        .await
                        .unwrap_or_default();
                    offsets[i] += data.len() as u64;
                    if !send_all(&client, session, &id, s, &data).await {
                        return;
                    }
                }
            }
            if gone {
                break;
            }
        }
    }
    send(
        &client,
        session,
        &id,
        LogStream::Stdout,
        Vec::new(),
        true,
        None,
    )
    .await;
}
