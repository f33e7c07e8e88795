//! The texts of the mails the password flows send: what a person reads, in one place.

use crate::domain::Email;
use crate::store::{Channel, NewMessage, ProjectRecord};

/// A mail from `project` to `email`, sent as the project's sender.
fn mail(
    project: &ProjectRecord,
    email: &Email,
    subject: String,
    body: String,
    now: i64,
) -> NewMessage {
    NewMessage {
        project_id: Some(project.id.clone()),
        channel: Channel::Email,
        recipient: email.as_str().to_owned(),
        subject,
        body,
        sender: project.delivery.mail_sender.clone(),
        created_at: now,
    }
}

pub(super) fn existing_account_message(
    project: &ProjectRecord,
    email: &Email,
    now: i64,
) -> NewMessage {
    mail(
        project,
        email,
        format!(
            "Someone tried to register at {} with your address",
            project.name
        ),
        format!(
            "Someone tried to create a {project} account with this address, which already has \
             one.\n\nIf it was you: log in to {project}, or choose a (new) password with \
             \"Forgot password\", which mails you a link.\n\nIf it was not you, ignore this \
             mail: nothing changed in your account.\n",
            project = project.name
        ),
        now,
    )
}

pub(super) fn reset_message(
    project: &ProjectRecord,
    email: &Email,
    link: &str,
    now: i64,
) -> NewMessage {
    let minutes = (project.passwords.reset_lifetime_seconds / 60).max(1);
    mail(
        project,
        email,
        format!("Reset your {} password", project.name),
        format!(
            "To choose a new password for your {project} account, open this link within \
             {minutes} minutes:\n\n{link}\n\nThe link works once. If you did not ask for it, \
             ignore this mail: your password stays as it is.\n",
            project = project.name
        ),
        now,
    )
}

pub(super) fn verification_message(
    project: &ProjectRecord,
    email: &Email,
    link: &str,
    now: i64,
) -> NewMessage {
    mail(
        project,
        email,
        format!("Confirm your email for {}", project.name),
        format!(
            "Someone, hopefully you, created a {project} account with this address. To \
             confirm it, open this link within 24 hours:\n\n{link}\n\n\
             If you did not create an account, do not open the link: ignore this mail and \
             the account stays locked.\n",
            project = project.name
        ),
        now,
    )
}

pub(super) fn removed_password_message(
    project: &ProjectRecord,
    email: &Email,
    link: &str,
    now: i64,
) -> NewMessage {
    let minutes = (project.passwords.reset_lifetime_seconds / 60).max(1);
    mail(
        project,
        email,
        format!("A password on your {} account was removed", project.name),
        format!(
            "You just confirmed this address at {project}. Before you did, someone had set a \
             password for it; since they never proved they own this mailbox, that password \
             was removed and every device logged in with it was logged out.\n\n\
             If you set that password yourself, choose it again: open this link within \
             {minutes} minutes to set a password:\n\n{link}\n\n\
             If you did not, nothing more is needed: only you can log in now.\n",
            project = project.name
        ),
        now,
    )
}
