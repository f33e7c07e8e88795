//! `envoy.service.auth.v3.Authorization/Check`: Envoy's external authorization over gRPC,
//! on the same listener as the portcullis services.
//!
//! The route binds the project with `context_extensions: {project_id: ...}` (else
//! `--authz-project-id`) and may let anonymous callers through with
//! `allow_public: "true"`. Allowed requests reach the upstream with the `x-portcullis-*`
//! headers set, and the client's own copies of them removed.

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckRequestExt, CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tonic::{Request, Response, Status};

use crate::domain::{Pass, PresentedToken, Refusal};
use crate::service::{Auth, GateCheck, GateDecision};

pub struct ExtAuthzApi {
    auth: Auth,
}

impl ExtAuthzApi {
    pub fn new(auth: Auth) -> Self {
        ExtAuthzApi { auth }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzApi {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let request = request.get_ref();
        let headers = request.get_client_headers();
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(String::as_str);
        let extensions = request.attributes.as_ref().map(|a| &a.context_extensions);
        let extension = |name: &str| extensions.and_then(|e| e.get(name)).map(String::as_str);
        let check = GateCheck {
            presented: PresentedToken::from_headers(header),
            project_id: extension("project_id"),
            allow_public: extension("allow_public") == Some("true"),
        };
        Ok(Response::new(match self.auth.gate(check).await? {
            GateDecision::Allow(pass) => allowed(pass),
            GateDecision::Deny(refusal) => denied(refusal),
        }))
    }
}

fn allowed(pass: Pass) -> CheckResponse {
    let mut ok = OkHttpResponseBuilder::new();
    for (name, value) in pass.set {
        ok.add_header(
            name,
            value,
            Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
            false,
        );
    }
    for name in pass.remove {
        ok.remove_header(name);
    }
    // The status built directly: tonic's `Status::ok` allocates a metadata map per call.
    let mut response = CheckResponse {
        status: Some(RpcStatus::default()),
        ..Default::default()
    };
    response.set_http_response(ok.build());
    response
}

fn denied(refusal: Refusal) -> CheckResponse {
    let mut denied = DeniedHttpResponseBuilder::new();
    denied.set_http_status(match refusal.status() {
        401 => HttpStatusCode::Unauthorized,
        _ => HttpStatusCode::Forbidden,
    });
    if let Some(challenge) = refusal.challenge() {
        denied.add_header(
            "www-authenticate",
            challenge,
            Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
            false,
        );
    }
    denied.add_header(
        "content-type",
        "application/json",
        Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
        false,
    );
    denied.set_body(refusal.body());
    let status = match refusal {
        Refusal::NoProject => Status::permission_denied(refusal.message()),
        _ => Status::unauthenticated(refusal.message()),
    };
    let mut response = CheckResponse::with_status(status);
    response.set_http_response(denied.build());
    response
}
