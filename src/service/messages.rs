//! The texts of the mails and texts the service sends: what a person reads, in one place.

use crate::domain::{Email, LoginCode, Name};
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

/// The mail (or text) with a login code and its magic link `url`; with codes `paused` for
/// the name (too many wrong ones today), the link alone, and why.
pub(super) fn code_message(
    project: &ProjectRecord,
    name: &Name,
    code: &LoginCode,
    url: &str,
    paused: bool,
    now: i64,
) -> NewMessage {
    let minutes = (project.codes.lifetime_seconds / 60).max(1);
    let (channel, subject, body) = match name {
        Name::Email(_) if paused => (
            Channel::Email,
            format!("Your login link for {}", project.name),
            format!(
                "Log in to {} with this link:\n\n    {url}\n\nIt works once and expires in \
                 {minutes} minutes.\n\nToo many wrong codes were entered for this address \
                 today, so login codes are paused for it; the link still works, and only \
                 someone who can read this mailbox can use it. If you did not try to log \
                 in, you can ignore this mail.\n",
                project.name
            ),
        ),
        Name::Phone(_) if paused => (
            Channel::Sms,
            String::new(),
            format!(
                "Log in to {} with this link (too many wrong codes today, so codes are \
                 paused): {url} It expires in {minutes} minutes.",
                project.name
            ),
        ),
        Name::Email(_) => (
            Channel::Email,
            format!("Your login code for {}: {}", project.name, code.expose()),
            format!(
                "Your login code for {} is:\n\n    {}\n\nOr log in with this link:\n\n    {url}\n\n\
                 Both work once and expire in {minutes} minutes.\n\
                 If you did not try to log in, you can ignore this mail.\n",
                project.name,
                code.expose()
            ),
        ),
        Name::Phone(_) => (
            Channel::Sms,
            String::new(),
            format!(
                "{} is your {} login code. It expires in {minutes} minutes.",
                code.expose(),
                project.name
            ),
        ),
    };
    NewMessage {
        project_id: Some(project.id.clone()),
        channel,
        recipient: name.as_str().to_owned(),
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
