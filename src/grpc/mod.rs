//! gRPC transport: decode the request, call one `Auth` operation, encode the answer.
//! Errors become `tonic::Status` through `From<Error>` in `error.rs`.

mod admin;
mod authentication;
mod ext_authz;
mod log;
mod operator;
mod password;
mod recovery;
mod verification;

use std::net::{IpAddr, SocketAddr};
use tonic::Request;
use tonic::service::Routes;

use crate::error::Error;
use crate::service::{Auth, IssuedSession};

pub use admin::AdminApi;
pub use authentication::AuthenticationApi;
pub use ext_authz::ExtAuthzApi;
pub use log::LogApi;
pub use operator::OperatorApi;
pub use password::PasswordApi;
pub use recovery::RecoveryApi;
pub use verification::VerificationApi;

/// Generated messages, clients and servers of `proto/portcullis/v1`.
#[allow(clippy::all)] // generated code
pub mod pb {
    tonic::include_proto!("portcullis.v1");
}

/// The encoded descriptors of every proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("portcullis_descriptor");

/// Envoy's ext_authz service and the files it imports, for server reflection.
pub const ENVOY_AUTHZ_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("envoy_authz_descriptor");

/// Names of the services this server implements, as health checks know them.
pub const SERVICE_NAMES: &[&str] = &[
    "portcullis.v1.AuthenticationService",
    "portcullis.v1.VerificationService",
    "portcullis.v1.RecoveryService",
    "portcullis.v1.LogService",
    "portcullis.v1.AdminService",
    "portcullis.v1.PasswordService",
    "portcullis.v1.OperatorService",
    "envoy.service.auth.v3.Authorization",
];

/// The portcullis.v1 services.
pub fn routes(auth: Auth) -> Routes {
    use pb::admin_service_server::AdminServiceServer;
    use pb::authentication_service_server::AuthenticationServiceServer;
    use pb::log_service_server::LogServiceServer;
    use pb::password_service_server::PasswordServiceServer;
    use pb::recovery_service_server::RecoveryServiceServer;
    use pb::verification_service_server::VerificationServiceServer;
    Routes::new(AuthenticationServiceServer::new(AuthenticationApi::new(
        auth.clone(),
    )))
    .add_service(VerificationServiceServer::new(VerificationApi::new(
        auth.clone(),
    )))
    .add_service(RecoveryServiceServer::new(RecoveryApi::new(auth.clone())))
    .add_service(LogServiceServer::new(LogApi::new(auth.clone())))
    .add_service(AdminServiceServer::new(AdminApi::new(auth.clone())))
    .add_service(PasswordServiceServer::new(PasswordApi::new(auth.clone())))
    .add_service(pb::operator_service_server::OperatorServiceServer::new(
        OperatorApi::new(auth.clone()),
    ))
    .add_service(envoy_types::ext_authz::v3::pb::AuthorizationServer::new(
        ExtAuthzApi::new(auth),
    ))
}

/// The client's address: the peer (axum's connect info when gRPC shares the HTTP listener,
/// tonic's own when it serves alone), or whom a trusted proxy's `x-forwarded-for` names.
fn client_address<T>(auth: &Auth, request: &Request<T>) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
        .or_else(|| request.remote_addr().map(|addr| addr.ip()));
    let forwarded = request
        .metadata()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    auth.client_address(peer, forwarded)
}

/// The token in `authorization: Bearer <token>` metadata.
fn bearer<T>(request: &Request<T>) -> Result<String, Error> {
    let value = request.metadata().get("authorization").ok_or_else(|| {
        Error::unauthenticated("missing credentials: send `authorization: Bearer <token>` metadata")
    })?;
    let value = value
        .to_str()
        .map_err(|_| Error::unauthenticated("the authorization metadata is not valid text"))?;
    let token = crate::domain::bearer_token(value).ok_or_else(|| {
        Error::unauthenticated("the authorization metadata must read `Bearer <token>`")
    })?;
    Ok(token.to_owned())
}

fn session_message(session: IssuedSession) -> pb::Session {
    pb::Session {
        token: session.token,
        json_web_token: Some(pb::JsonWebToken {
            token: session.jwt,
            expiration_date: Some(prost_types::Timestamp {
                seconds: session.jwt_expires_at,
                nanos: 0,
            }),
        }),
        user_id: session.user_id,
        uid: session.uid,
        encrypted: session.encrypted,
        encryption_text: session.encryption_text.unwrap_or_default(),
    }
}
