//! Sessions: issuing them (opaque token + JWT), authorizing tokens, logout, user info.

use super::{Auth, parse_token};
use crate::domain::{MAX_TOKEN_LEN, TokenHash, TokenKind, UserTokenForm};
use crate::error::{Error, Result};
use crate::jwt::{Claims, HasuraClaims, JwtError};
use crate::store::{NewSession, ProjectRecord, SessionUser, Tx, UserRecord};

/// A new session as handed to the client.
#[derive(Debug)]
pub struct IssuedSession {
    /// The opaque USER_TOKEN.
    pub token: String,
    pub jwt: String,
    pub jwt_expires_at: i64,
    pub user_id: i64,
    pub uid: String,
    pub encrypted: bool,
    pub encryption_text: Option<String>,
}

/// Who a token belongs to. Anything invalid is `Public`, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    Public,
    User {
        id: i64,
        uid: String,
        name: Option<String>,
        root: bool,
        project_id: String,
        /// When the token stops working (the JWT's `exp`, or the session's end).
        expires_at: i64,
        /// When the session (and its tokens) was issued.
        issued_at: i64,
    },
}

#[derive(Debug, Clone)]
pub struct UserInfo {
    pub id: i64,
    pub uid: String,
    pub name: Option<String>,
    pub encrypted: bool,
    pub encryption_text: Option<String>,
}

impl From<UserRecord> for UserInfo {
    fn from(user: UserRecord) -> UserInfo {
        UserInfo {
            id: user.id,
            uid: user.uid,
            name: user.name,
            encrypted: user.encrypted,
            encryption_text: user.encryption_text,
        }
    }
}

impl Auth {
    /// Opens a session for `user` inside the caller's transaction.
    pub(super) async fn open_session(
        &self,
        tx: &mut Tx,
        project: &ProjectRecord,
        user: &UserRecord,
        now: i64,
    ) -> Result<IssuedSession> {
        let policy = &self.inner.policy;
        let token = self.inner.user_tokens.issue();
        // Time-ordered, like uids: the id's index grows at its end.
        let session_id = crate::domain::random::uuid_v7().to_string();
        let expires_at = now + policy.session_ttl_seconds;
        tx.insert_session(&NewSession {
            id: session_id.clone(),
            token_hash: token.hash().0,
            user_id: user.id,
            created_at: now,
            expires_at,
        })
        .await?;
        let jwt_expires_at = (now + policy.jwt_ttl_seconds).min(expires_at);
        let claims = Claims {
            iss: self.keys().issuer().to_owned(),
            aud: user.project_id.clone(),
            sub: user.uid.clone(),
            iat: now,
            exp: jwt_expires_at,
            sid: session_id,
            hasura: project
                .hasura_jwt_claims
                .then(|| HasuraClaims::for_user(&user.uid, user.root)),
        };
        let jwt = self
            .keys()
            .sign(&claims)
            .map_err(|e| Error::Internal(e.into()))?;
        crate::security_event!("login_ok", project_id = %project.id, user_id = user.id);
        Ok(IssuedSession {
            token: token.into_string(),
            jwt,
            jwt_expires_at,
            user_id: user.id,
            uid: user.uid.clone(),
            encrypted: user.encrypted,
            encryption_text: user.encryption_text.clone(),
        })
    }

    /// The hot path: who does this token (USER_TOKEN or JWT) belong to? Never writes.
    pub async fn authorize(&self, token: &str) -> Result<Authorization> {
        Ok(match self.live_session(token, Lookup::Cached).await? {
            Some((session, expires_at)) => {
                crate::observe::note_project(&session.user.project_id);
                Authorization::User {
                    id: session.user.id,
                    uid: session.user.uid,
                    name: session.user.name,
                    root: session.user.root,
                    project_id: session.user.project_id,
                    expires_at,
                    issued_at: session.created_at,
                }
            }
            None => Authorization::Public,
        })
    }

    /// [`Auth::authorize`] bound to a project: a token of any other project is `public`,
    /// so a caller serving one project never takes another project's user for its own.
    /// An empty or absent `project_id` binds nothing.
    pub async fn authorize_for(
        &self,
        token: &str,
        project_id: Option<&str>,
    ) -> Result<Authorization> {
        let authorization = self.authorize(token).await?;
        Ok(match (project_id.map(str::trim), authorization) {
            (Some(wanted), Authorization::User { project_id, .. })
                if !wanted.is_empty() && wanted != project_id =>
            {
                Authorization::Public
            }
            (_, authorization) => authorization,
        })
    }

    /// How long an answer about this authorization may be cached by a client (e.g. Hasura):
    /// never beyond the token's end, and at most a minute so a logout is seen soon.
    pub fn cacheable_seconds(&self, authorization: &Authorization) -> i64 {
        match authorization {
            Authorization::Public => 0,
            Authorization::User { expires_at, .. } => (expires_at - self.now()).clamp(0, 60),
        }
    }

    /// Revokes the session the token belongs to, and only that one.
    pub async fn logout(&self, token: &str) -> Result<()> {
        let session = self.require_session(token).await?;
        self.store().delete_session(&session.session_id).await?;
        crate::security_event!(
            "session_revoked",
            project_id = %session.user.project_id,
            user_id = session.user.id
        );
        Ok(())
    }

    pub async fn get_user(&self, token: &str) -> Result<UserInfo> {
        Ok(self.require_session(token).await?.user.into())
    }

    pub(super) async fn require_session(&self, token: &str) -> Result<SessionUser> {
        parse_token(token, "user token")?;
        self.live_session(token, Lookup::Fresh)
            .await?
            .map(|(session, _)| session)
            .ok_or_else(|| Error::unauthenticated("invalid, expired or revoked user token"))
    }

    /// Resolves a USER_TOKEN or a JWT to its live session and the time the token stops
    /// working; `None` for anything else.
    async fn live_session(
        &self,
        token: &str,
        lookup: Lookup,
    ) -> Result<Option<(SessionUser, i64)>> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let now = self.now();
        let is_user_token = TokenKind::of(token) == Some(TokenKind::User);
        let hash = TokenHash::of(token);
        if let Lookup::Cached = lookup
            && let Some(session) = self.store().cached_session(&hash.0, now)
        {
            // Only sessions read from the database are cached: no tag check needed.
            let expires_at = session.expires_at;
            return Ok(Some((session, expires_at)));
        }
        // Forged and random USER_TOKENs end here, in memory: a flood of them never
        // reaches the database. Logged out or expired ones, once read, end here too.
        if is_user_token
            && (self.inner.user_tokens.form(token, now) == UserTokenForm::Forged
                || matches!(lookup, Lookup::Cached) && self.store().known_refused(&hash.0))
        {
            return Ok(None);
        }
        let found = if is_user_token {
            let found = self
                .store()
                .session_by_token_hash(hash.as_bytes(), now)
                .await?;
            if let (Lookup::Cached, None) = (lookup, &found) {
                self.store().cache_refused(hash.0);
            }
            found
        } else if looks_like_jwt(token) {
            self.jwt_session(token, now).await?
        } else {
            None
        };
        if let (Lookup::Cached, Some(session)) = (lookup, &found) {
            self.store().cache_session(hash.0, session.clone());
        }
        Ok(found.map(|session| {
            let expires_at = session.expires_at;
            (session, expires_at)
        }))
    }

    /// The live session of a valid JWT, with `expires_at` cut to the JWT's own expiry.
    async fn jwt_session(&self, token: &str, now: i64) -> Result<Option<SessionUser>> {
        let verified = match self.keys().verify(token) {
            Err(JwtError::UnknownKey) => {
                // Another replica may have added a key; the reload is rate-limited inside.
                self.keys().reload_if_stale().await?;
                self.keys().verify(token)
            }
            other => other,
        };
        let Ok(claims) = verified else {
            return Ok(None);
        };
        if claims.exp <= now {
            return Ok(None);
        }
        let session = self.store().session_by_id(&claims.sid, now).await?;
        Ok(session
            .filter(|s| s.user.uid == claims.sub && s.user.project_id == claims.aud)
            .map(|mut s| {
                s.expires_at = s.expires_at.min(claims.exp);
                s
            }))
    }
}

/// Whether a session lookup may be answered from the hot-path cache: only Authorize's
/// may; operations that act on the account read the database.
#[derive(Clone, Copy)]
enum Lookup {
    Cached,
    Fresh,
}

fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|&b| b == b'.').count() == 2
}
