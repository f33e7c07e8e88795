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
        "envoy.service.auth.v3.Authorization",
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

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut app = spawn_app(Backend::Sqlite).await;
    let root = app.log_in(OWNER).await;
    let event = app
        .logs
        .clone()
        .create_event(bearer(
            root.token(),
            portcullis::grpc::pb::CreateEventRequest { name: "e".into() },
        ))
        .await
        .unwrap()
        .into_inner()
        .event_id;

    // A request whose body is still arriving when the shutdown starts.
    let body = r#"{"data":"written during shutdown"}"#;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "POST /api/logs?id={event} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let stopping = tokio::spawn(async move {
        let result = app.stop().await;
        (app, result)
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "the server waits for the request in flight"
    );
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let (app, result) = stopping.await.unwrap();
    result.expect("a clean stop");
    assert_eq!(
        app.database.count("logs").await,
        1,
        "the request's work was done"
    );
}
