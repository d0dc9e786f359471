//! RPC handlers: `nexus.gitops.status` (every source's soft status) and `nexus.gitops.sync`
//! (sync one source now; answered when a sync that started after the call finished).

use std::sync::Arc;
use std::time::Duration;

use nexus_api::gitops::{
    GitopsStatusRequest, GitopsStatusResponse, GitopsSyncRequest, GitopsSyncResponse,
};
use nexus_api::kinds;
use nexus_gitops::SourceId;
use nexus_transport::rpc::{Access, Context, Router};
use nexus_transport::{ErrorCode, RpcError};

use super::GitOps;

/// How long `nexus.gitops.sync` waits for the sync it started.
const SYNC_WAIT: Duration = Duration::from_secs(120);

pub(crate) fn routes(g: &Arc<GitOps>, r: &mut Router) {
    let s = g.clone();
    r.unary(
        kinds::GITOPS_STATUS,
        Access::Authenticated,
        move |_ctx: Context, req: GitopsStatusRequest| {
            let s = s.clone();
            async move {
                if req.name.is_some() {
                    // A source committed a moment ago may not be picked up yet.
                    s.reconcile();
                }
                let sources: Vec<_> = s
                    .statuses()
                    .into_iter()
                    .filter(|st| req.namespace.as_ref().is_none_or(|n| *n == st.namespace))
                    .filter(|st| req.name.as_ref().is_none_or(|n| *n == st.name))
                    .collect();
                if sources.is_empty()
                    && let Some(name) = &req.name
                {
                    return Err(RpcError::not_found(format!(
                        "no git source {}/{name}",
                        req.namespace.as_deref().unwrap_or("default")
                    )));
                }
                Ok(GitopsStatusResponse {
                    replica: s.replica.clone(),
                    webhook: s.webhook_addr().map(|a| a.to_string()),
                    sources,
                })
            }
        },
    );
    let s = g.clone();
    r.unary(
        kinds::GITOPS_SYNC,
        Access::Authenticated,
        move |_ctx: Context, req: GitopsSyncRequest| {
            let s = s.clone();
            async move {
                let id = SourceId::new(req.namespace, req.name);
                let status = s.sync_now(&id, SYNC_WAIT).await.map_err(|e| {
                    if e.starts_with("no git source") {
                        RpcError::not_found(e)
                    } else {
                        RpcError::new(ErrorCode::Unavailable, e)
                    }
                })?;
                Ok(GitopsSyncResponse { status })
            }
        },
    );
}
