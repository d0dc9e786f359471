//! Conversions from ledger records to wire types, and ledger errors to RPC errors.

use nexus_api::client::{ObjectInfo, Outcome, VersionInfo};
use nexus_ledger::audit::Version;
use nexus_ledger::{ObjectOutcome, ObjectState, RequestError, SubmitError};
use nexus_transport::{ErrorCode, RpcError};

/// A live object as the API shows it.
pub fn object_info(s: &ObjectState) -> ObjectInfo {
    ObjectInfo {
        object: s.object.clone(),
        content_hash: s.content_hash.to_hex(),
        generation: s.generation,
        resource_version: s.resource_version,
        created_height: s.created_height,
        updated_height: s.updated_height,
        last_actor: s.last_actor.clone(),
        owner: s.owner.clone(),
        status: None,
    }
}

pub fn outcome(o: &ObjectOutcome) -> Outcome {
    Outcome {
        kind: o.key.kind.to_string(),
        namespace: o.key.namespace.clone(),
        name: o.key.name.clone(),
        action: o.action.as_str().to_string(),
        generation: o.generation,
        resource_version: o.resource_version,
    }
}

pub fn version(v: &Version) -> VersionInfo {
    VersionInfo {
        height: v.id.height,
        timestamp_ms: v.timestamp_ms,
        actor: v.actor.clone(),
        source: serde_json::to_value(&v.source).unwrap_or_default(),
        request_id: v.request_id.clone(),
        action: v.action.as_str().to_string(),
        generation: v.generation,
        object: v.object.clone(),
        changes: v.changes.clone(),
    }
}

/// Maps a refused submission to the RPC error the client sees.
pub fn submit_error(e: SubmitError) -> RpcError {
    let code = match &e {
        SubmitError::Signature(_) => ErrorCode::PermissionDenied,
        SubmitError::Request(r) => return request_error(r),
        SubmitError::Storage(_) => ErrorCode::Unavailable,
        SubmitError::Refused(_) => ErrorCode::InvalidArgument,
        SubmitError::Ordering(_) => ErrorCode::Unavailable,
        SubmitError::Closed => ErrorCode::Unavailable,
    };
    RpcError::new(code, e.to_string())
}

/// Maps a request that cannot be planned to the RPC error the client sees.
pub fn request_error(e: &RequestError) -> RpcError {
    let code = match e {
        RequestError::Conflict { .. } => ErrorCode::Conflict,
        RequestError::NotFound { .. } => ErrorCode::NotFound,
        RequestError::RequestIdReused { .. } => ErrorCode::AlreadyExists,
        _ => ErrorCode::InvalidArgument,
    };
    let err = RpcError::new(code, e.to_string());
    match e {
        // The problems as data, for clients that show them their own way.
        RequestError::InvalidObject {
            op,
            object,
            problems,
            omitted,
        } => err.with_details(serde_json::json!({
            "op": op,
            "object": object,
            "problems": problems,
            "omitted": omitted,
        })),
        _ => err,
    }
}
