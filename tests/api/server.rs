//! The listener itself: reflection, health from the start, plain HTTP beside gRPC.

use crate::helpers::*;
use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

#[tokio::test]
async fn reflection_v1alpha_lists_every_service() {
    let app = spawn_app(Backend::Sqlite).await;
    let channel = tonic::transport::Channel::from_shared(app.address.clone())
        .unwrap()
        .connect_lazy();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = responses.message().await.unwrap().expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "portcullis.v1.AuthenticationService",
        "portcullis.v1.VerificationService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn unknown_http_paths_are_404_and_unknown_grpc_methods_unimplemented() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .http
        .get(format!("{}/no/such/page", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);

    let channel = tonic::transport::Channel::from_shared(app.address.clone())
        .unwrap()
        .connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/portcullis.v1.Nothing/Here");
    let error = grpc
        .unary::<(), (), _>(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(error.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn the_jwks_is_served_with_a_short_cache_lifetime() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["keys"].as_array().map(Vec::len), Some(1));
}
