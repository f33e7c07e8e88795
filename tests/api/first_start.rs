//! Replicas starting together on an empty database make exactly one default project.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::Application;

on_both_backends!(replicas_starting_at_the_same_instant_make_one_default_project);

async fn replicas_starting_at_the_same_instant_make_one_default_project(backend: Backend) {
    for round in 0..6 {
        let database = TestDatabase::new(backend).await;
        let outboxes = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let settings = |i: usize| {
            let mut settings = settings_for(&database.url);
            settings.owner = Some(OWNER.into());
            settings.mail_outbox = outboxes[i].path().to_path_buf();
            settings
        };
        let (first, second) = tokio::join!(
            Application::build(settings(0)),
            Application::build(settings(1))
        );
        let (first, second) = (first.expect("replica 1"), second.expect("replica 2"));
        let made = [first.default_project(), second.default_project()]
            .iter()
            .filter(|p| p.is_some())
            .count();
        assert_eq!(
            made, 1,
            "round {round}: {made} replicas made a default project"
        );
        assert_eq!(database.count("projects").await, 1, "round {round}");
        assert_eq!(database.count("users").await, 1, "round {round}: one owner");
    }
}
