//! Codes for phone names go out as texts: through the SMS webhook (service-wide, or the
//! project's own with its secret), or into the outbox folder when none is set.

use crate::helpers::*;
use crate::on_both_backends;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use portcullis::grpc::pb::UpdateProjectSettingsRequest;
use std::sync::{Arc, Mutex};

on_both_backends!(
    a_phone_name_gets_its_code_through_the_webhook,
    a_projects_own_webhook_and_secret_take_precedence,
    without_a_webhook_texts_land_in_the_outbox_folder,
);

/// (authorization header, JSON body) of each request the webhook received.
type Received = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;

async fn start_webhook() -> (String, Received) {
    let received: Received = Arc::default();
    let router = axum::Router::new()
        .route(
            "/sms",
            axum::routing::post(
                |State(received): State<Received>,
                 headers: HeaderMap,
                 Json(body): Json<serde_json::Value>| async move {
                    let auth = headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    received.lock().unwrap().push((auth, body));
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
}

async fn a_phone_name_gets_its_code_through_the_webhook(backend: Backend) {
    let (url, received) = start_webhook().await;
    let app = spawn_app_with(backend, |settings| {
        settings.sms_webhook = Some(portcullis::delivery::SmsWebhook { url, secret: None });
    })
    .await;

    let started = app
        .authenticate("+41 79 123 45 67")
        .await
        .expect("a phone name");
    let (auth, body) = wait_for(|| received.lock().unwrap().first().cloned())
        .await
        .expect("a text");
    assert_eq!(body["recipient"], "+41791234567", "normalized to E.164");
    assert_eq!(auth, None);
    let code = code_in(body["message"].as_str().unwrap()).expect("a code in the text");
    let session = app.confirm(&code, &started.code_token).await.unwrap();
    assert_eq!(app.authorize(&session.token).await.name, "+41791234567");

    let again = app.authenticate("0041791234567").await.unwrap();
    assert!(
        !again.registration,
        "the same number written differently is the same user"
    );
}

async fn a_projects_own_webhook_and_secret_take_precedence(backend: Backend) {
    let (service_url, service_received) = start_webhook().await;
    let (project_url, project_received) = start_webhook().await;
    let app = spawn_app_with(backend, |settings| {
        settings.sms_webhook = Some(portcullis::delivery::SmsWebhook {
            url: service_url,
            secret: None,
        });
    })
    .await;
    let project = app
        .update_settings(UpdateProjectSettingsRequest {
            sms_webhook_url: Some(project_url.clone()),
            sms_webhook_secret: Some("s3cret".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(project.sms_webhook_url, project_url);
    assert!(project.sms_webhook_secret_set);

    app.authenticate("+4915112345678").await.unwrap();
    let (auth, body) = wait_for(|| project_received.lock().unwrap().first().cloned())
        .await
        .expect("a text");
    assert_eq!(auth.as_deref(), Some("Bearer s3cret"));
    assert_eq!(body["recipient"], "+4915112345678");
    assert!(service_received.lock().unwrap().is_empty());
}

async fn without_a_webhook_texts_land_in_the_outbox_folder(backend: Backend) {
    let app = spawn_app(backend).await;
    let started = app.authenticate("+1 415 555 0100").await.unwrap();
    let code = app.wait_for_code("+14155550100", 1).await;
    app.confirm(&code, &started.code_token)
        .await
        .expect("the code from the outbox works");
}
