//! Events and logs: the root user creates and reads, anyone with the event id writes.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::*;
use tonic::Code;

on_both_backends!(
    the_root_user_reads_logs_newest_first_page_by_page,
    only_the_root_user_of_the_project_creates_events_and_reads_logs,
    log_lines_are_size_and_rate_limited,
);

async fn create_event(app: &TestApp, token: &str) -> Result<String, tonic::Status> {
    let request = bearer(
        token,
        CreateEventRequest {
            name: "checkout".into(),
        },
    );
    app.logs
        .clone()
        .create_event(request)
        .await
        .map(|r| r.into_inner().event_id)
}

async fn add_log(app: &TestApp, event_id: &str, data: Option<&str>) -> Result<(), tonic::Status> {
    let request = AddLogRequest {
        event_id: event_id.into(),
        data: data.map(Into::into),
    };
    app.logs.clone().add_log(request).await.map(|_| ())
}

async fn list(
    app: &TestApp,
    token: &str,
    event_id: &str,
    size: u32,
    page: &str,
) -> Result<ListLogsResponse, tonic::Status> {
    let request = bearer(
        token,
        ListLogsRequest {
            event_id: event_id.into(),
            page_size: size,
            page_token: page.into(),
        },
    );
    app.logs
        .clone()
        .list_logs(request)
        .await
        .map(|r| r.into_inner())
}

async fn the_root_user_reads_logs_newest_first_page_by_page(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.log_in(OWNER).await;
    let event = create_event(&app, root.token()).await.unwrap();
    for i in 0..5 {
        add_log(&app, &event, Some(&format!("line {i}")))
            .await
            .unwrap();
    }
    add_log(&app, &event, None).await.unwrap();
    add_log(&app, &event, Some("'); DROP TABLE logs;--"))
        .await
        .unwrap();

    let first = list(&app, root.token(), &event, 3, "").await.unwrap();
    let data: Vec<Option<&str>> = first.logs.iter().map(|l| l.data.as_deref()).collect();
    assert_eq!(
        data,
        [Some("'); DROP TABLE logs;--"), None, Some("line 4")],
        "newest first, verbatim"
    );
    assert!(first.logs.iter().all(|l| l.created_at.is_some()));
    assert!(!first.next_page_token.is_empty());
    let second = list(&app, root.token(), &event, 3, &first.next_page_token)
        .await
        .unwrap();
    let data: Vec<&str> = second
        .logs
        .iter()
        .filter_map(|l| l.data.as_deref())
        .collect();
    assert_eq!(data, ["line 3", "line 2", "line 1"]);
    let last = list(&app, root.token(), &event, 3, &second.next_page_token)
        .await
        .unwrap();
    assert_eq!(last.logs.len(), 1);
    assert!(last.next_page_token.is_empty(), "the last page says so");

    let bad_page = list(&app, root.token(), &event, 3, "not-a-page")
        .await
        .unwrap_err();
    assert_eq!(bad_page.code(), Code::InvalidArgument);
}

async fn only_the_root_user_of_the_project_creates_events_and_reads_logs(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.log_in(OWNER).await;
    let user = app.log_in("plain@example.com").await;
    let denied = create_event(&app, user.token()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(app.database.count("events").await, 0);

    let event = create_event(&app, root.token()).await.unwrap();
    assert!(event.len() >= 22, "event ids are not guessable: {event}");
    add_log(&app, &event, Some("hello")).await.unwrap();
    let denied = list(&app, user.token(), &event, 0, "").await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let other = app
        .auth
        .create_project("Other", Some("boss@other.test"), false, false)
        .await
        .unwrap();
    let started = app
        .authenticate_with(&other.app_token, "boss@other.test")
        .await
        .unwrap();
    let code = app.wait_for_code("boss@other.test", 1).await;
    let other_root = app.confirm(&code, &started.code_token).await.unwrap();
    let hidden = list(&app, &other_root.token, &event, 0, "")
        .await
        .unwrap_err();
    assert_eq!(
        hidden.code(),
        Code::NotFound,
        "another project's root sees nothing"
    );

    let unknown = add_log(&app, "no-such-event", Some("x")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

async fn log_lines_are_size_and_rate_limited(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.log_in(OWNER).await;
    let event = create_event(&app, root.token()).await.unwrap();
    let huge = add_log(&app, &event, Some(&"x".repeat(8 * 1024 + 1)))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::InvalidArgument);
    assert_eq!(app.database.count("logs").await, 0);

    for _ in 0..120 {
        add_log(&app, &event, Some("tick")).await.unwrap();
    }
    let limited = add_log(&app, &event, Some("one too many"))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    app.clock.advance(61);
    add_log(&app, &event, Some("a new minute")).await.unwrap();
}
