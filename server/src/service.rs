//! The client API handlers: submit, dry-run, get, watch, history, audit, verify, status.

use std::sync::Arc;
use std::time::Instant;

use nexus_api::client::*;
use nexus_api::kinds;
use nexus_ledger::audit::{AuditQuery, history, query};
use nexus_ledger::{Caller, SignedRequest};
use nexus_schemas::{Kind, ObjectKey};
use nexus_transport::rpc::{Access, Context, Router, channel_stream};
use nexus_transport::{ErrorCode, RpcError};

use crate::Shared;
use crate::convert::{object_info, outcome, request_error, submit_error, version};
use crate::watch::{Visible, events_of, initial, selected, selector_kind};

/// Runs blocking ledger work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RpcError> + Send + 'static,
) -> Result<T, RpcError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RpcError::internal(format!("worker failed: {e}")))?
}

fn caller(ctx: &Context) -> Result<Caller, RpcError> {
    let id = ctx.identity()?;
    Ok(Caller {
        actor: id.to_string(),
        public_key: id.public_key,
    })
}

fn decode_signed(bytes: &[u8]) -> Result<SignedRequest, RpcError> {
    SignedRequest::from_bytes(bytes)
        .map_err(|e| RpcError::invalid_argument(format!("malformed signed request: {e}")))
}

/// Builds the router with every client API kind.
pub fn router(shared: Arc<Shared>) -> Router {
    let mut r = Router::new();
    let s = shared.clone();
    r.unary(
        kinds::SUBMIT,
        Access::Authenticated,
        move |ctx: Context, req: SubmitRequest| {
            let s = s.clone();
            async move {
                let caller = caller(&ctx)?;
                let signed = decode_signed(&req.signed)?;
                let ledger = s.ledger.clone();
                // The checks (signature, every object) run on a blocking thread; the request is
                // then ordered without holding a thread, and its answer comes back here.
                let (tx, answer) = tokio::sync::oneshot::channel();
                blocking(move || {
                    ledger.submit_then(signed, &caller, move |r| {
                        let _ = tx.send(r);
                    });
                    Ok(())
                })
                .await?;
                let applied = answer
                    .await
                    .map_err(|_| RpcError::internal("the ledger dropped the request"))?
                    .map_err(submit_error)?;
                Ok(SubmitResponse {
                    height: applied.height,
                    request_id: applied.request_id,
                    outcomes: applied.outcomes.iter().map(outcome).collect(),
                    duplicate: applied.duplicate,
                })
            }
        },
    );
    let s = shared.clone();
    r.unary(
        kinds::DRY_RUN,
        Access::Authenticated,
        move |ctx: Context, req: SubmitRequest| {
            let s = s.clone();
            async move {
                let caller = caller(&ctx)?;
                let signed = decode_signed(&req.signed)?;
                signed
                    .verify_bound(&caller.actor, &caller.public_key)
                    .map_err(|e| RpcError::new(ErrorCode::PermissionDenied, e.to_string()))?;
                let ledger = s.ledger.clone();
                blocking(move || {
                    let plan = ledger
                        .dry_run(&signed.request)
                        .map_err(|e| request_error(&e))?;
                    let state = ledger.state();
                    let changes = dry_run_changes(&state, &signed.request);
                    Ok(DryRunResponse {
                        height: state.height,
                        outcomes: plan.outcomes.iter().map(outcome).collect(),
                        changes,
                    })
                })
                .await
            }
        },
    );
    let s = shared.clone();
    r.unary(
        kinds::GET,
        Access::Authenticated,
        move |_ctx: Context, req: GetRequest| {
            let s = s.clone();
            async move {
                let kind = selector_kind(&req.selector)?;
                if req.consistent {
                    // Read through the log: wait until a barrier ordered after this call is
                    // applied here, so every acknowledged write is visible.
                    let ledger = s.ledger.clone();
                    blocking(move || {
                        ledger
                            .read_barrier(std::time::Duration::from_secs(30))
                            .map_err(submit_error)
                    })
                    .await?;
                }
                let state = s.ledger.state();
                let objects = state
                    .objects
                    .iter()
                    .filter(|(k, o)| selected(&req.selector, kind, k, Some(&o.object)))
                    .map(|(k, o)| {
                        let mut info = object_info(o);
                        info.status = s.nodes.status_of(k);
                        info
                    })
                    .collect();
                Ok(GetResponse {
                    height: state.height,
                    objects,
                })
            }
        },
    );
    let s = shared.clone();
    r.streaming(kinds::WATCH, Access::Authenticated, move |_ctx: Context, req: WatchRequest| {
        let s = s.clone();
        async move {
            let kind = selector_kind(&req.selector)?;
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            // Subscribe before reading the state, then skip entries the initial list includes.
            let mut entries = s.watch.subscribe();
            let mut visible = Visible::new();
            let (first, from) = {
                let state = s.ledger.state();
                (initial(&state, &req.selector, kind, &mut visible), state.height)
            };
            let ledger = s.ledger.clone();
            tokio::spawn(async move {
                for ev in first {
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                loop {
                    match entries.recv().await {
                        Ok(entry) if entry.height <= from => continue,
                        Ok(entry) => {
                            let evs = {
                                let state = ledger.state();
                                events_of(&entry, &state, &req.selector, kind, &mut visible)
                            };
                            for ev in evs {
                                if tx.send(Ok(ev)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            let _ = tx.send(Err(RpcError::new(ErrorCode::Overloaded, format!("the watch fell {n} entries behind; watch again to resync")))).await;
                            return;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
            Ok(channel_stream(rx))
        }
    });
    let s = shared.clone();
    r.unary(
        kinds::HISTORY,
        Access::Authenticated,
        move |_ctx: Context, req: HistoryRequest| {
            let s = s.clone();
            async move {
                let kind = Kind::parse(&req.kind).ok_or_else(|| {
                    RpcError::invalid_argument(format!("unknown kind {:?}", req.kind))
                })?;
                let key = ObjectKey::new(kind, req.namespace, req.name);
                let ledger = s.ledger.clone();
                blocking(move || {
                    let view = ledger
                        .store()
                        .read()
                        .map_err(|e| RpcError::new(ErrorCode::Unavailable, e.to_string()))?;
                    let versions = history(&view, &key, req.limit)
                        .map_err(|e| RpcError::new(ErrorCode::Unavailable, e.to_string()))?;
                    if versions.is_empty() {
                        return Err(RpcError::not_found(format!("{key} has no history")));
                    }
                    Ok(HistoryResponse {
                        versions: versions.iter().map(version).collect(),
                    })
                })
                .await
            }
        },
    );
    let s = shared.clone();
    r.streaming(
        kinds::AUDIT,
        Access::Authenticated,
        move |_ctx: Context, req: AuditRequest| {
            let s = s.clone();
            async move {
                let kind = match &req.kind {
                    Some(k) => Some(Kind::parse(k).ok_or_else(|| {
                        RpcError::invalid_argument(format!("unknown kind {k:?}"))
                    })?),
                    None => None,
                };
                let q = AuditQuery {
                    kind,
                    namespace: req.namespace,
                    name: req.name,
                    actor: req.actor,
                    source_type: req.source,
                    commit: req.commit,
                    since_ms: req.since_ms,
                    until_ms: req.until_ms,
                    before: None,
                    limit: req.limit,
                };
                let ledger = s.ledger.clone();
                let records = blocking(move || {
                    let view = ledger
                        .store()
                        .read()
                        .map_err(|e| RpcError::new(ErrorCode::Unavailable, e.to_string()))?;
                    query(&view, &q)
                        .map_err(|e| RpcError::new(ErrorCode::Unavailable, e.to_string()))
                })
                .await?;
                let items: Vec<Result<serde_json::Value, RpcError>> =
                    records.iter().map(|r| Ok(r.to_json())).collect();
                Ok(futures::stream::iter(items))
            }
        },
    );
    let s = shared.clone();
    r.unary(
        kinds::VERIFY,
        Access::Authenticated,
        move |_ctx: Context, req: VerifyRequest| {
            let s = s.clone();
            async move {
                let ledger = s.ledger.clone();
                let name = s.name.clone();
                blocking(move || {
                    let t = Instant::now();
                    let unavailable = |e: nexus_ledger::StoreError| {
                        RpcError::new(ErrorCode::Unavailable, e.to_string())
                    };
                    let opts = nexus_ledger::audit::VerifyOptions {
                        up_to: req.up_to,
                        indexes: req.indexes,
                        ..Default::default()
                    };
                    let mut report = nexus_ledger::audit::verify_with(ledger.store(), &opts)
                        .map_err(unavailable)?;
                    let certs =
                        nexus_ledger::audit::verify_certificates(ledger.store(), None, req.up_to)
                            .map_err(unavailable)?;
                    if let Some(p) = certs.problem
                        && report
                            .problem
                            .as_ref()
                            .is_none_or(|q| p.height() < q.height())
                    {
                        report.problem = Some(p);
                    }
                    let (head_height, head_hash) = report
                        .head
                        .as_ref()
                        .map(|h| (h.height, h.hash.to_string()))
                        .unwrap_or((0, String::new()));
                    Ok(VerifyResponse {
                        replica: name,
                        ok: report.is_ok(),
                        entries: report.entries,
                        requests: report.requests,
                        events: report.events,
                        head_height,
                        head_hash,
                        first_bad_height: report.problem.as_ref().map(|p| p.height()),
                        problems: report.problem.iter().map(|p| p.to_string()).collect(),
                        elapsed_ms: t.elapsed().as_millis() as u64,
                        certified: certs.certified,
                        uncertified: certs.uncertified,
                    })
                })
                .await
            }
        },
    );
    let s = shared;
    r.unary(
        kinds::STATUS,
        Access::Authenticated,
        move |_ctx: Context, _req: StatusRequest| {
            let s = s.clone();
            async move {
                let r = s.clone();
                let replicas =
                    blocking(move || Ok(r.replication.replicas(&r.addr.to_string()))).await?;
                let state = s.ledger.state();
                let replicas = if replicas.is_empty() {
                    vec![ReplicaStatus {
                        name: s.name.clone(),
                        addr: s.addr.to_string(),
                        height: state.height,
                        round: None,
                        health: "unknown".into(),
                        lag: 0,
                    }]
                } else {
                    replicas
                };
                Ok(StatusResponse {
                    cluster: s.cluster.clone(),
                    replica: s.name.clone(),
                    height: state.height,
                    head_hash: state.head_hash.to_string(),
                    objects: state.objects.len(),
                    replicas,
                    nodes: s
                        .nodes
                        .node_table()
                        .iter()
                        .filter_map(|n| serde_json::to_value(n).ok())
                        .collect(),
                    conditions: s.nodes.conditions(),
                })
            }
        },
    );
    r
}

/// The change set a request would make against `state` (for `apply --dry-run`).
fn dry_run_changes(
    state: &nexus_ledger::State,
    request: &nexus_ledger::Request,
) -> nexus_schemas::ChangeSet {
    use std::collections::BTreeMap;
    let mut old = BTreeMap::new();
    let mut new = BTreeMap::new();
    for op in &request.ops {
        match op {
            nexus_ledger::Op::Apply { object, .. } => {
                let Ok(obj) = serde_json::from_value::<nexus_schemas::Object>(object.clone())
                else {
                    continue;
                };
                let key = obj.key();
                if let Some(live) = state.get(&key) {
                    old.insert(key.clone(), live.object.clone());
                }
                new.insert(key, nexus_schemas::canonical_value(&obj));
            }
            nexus_ledger::Op::Delete { key, .. } => {
                if let Some(live) = state.get(key) {
                    old.insert(key.clone(), live.object.clone());
                }
            }
            // Node facts are not objects: nothing to diff.
            nexus_ledger::Op::NodeJoin { .. }
            | nexus_ledger::Op::NodeLabels { .. }
            | nexus_ledger::Op::NodeLostAttest { .. }
            | nexus_ledger::Op::AddValidator { .. }
            | nexus_ledger::Op::RemoveValidator { .. } => {}
        }
    }
    nexus_schemas::diff_canonical(&old, &new)
}
