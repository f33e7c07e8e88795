//! The gate: one decision for Envoy ext_authz (gRPC and HTTP) and forward auth (nginx,
//! Caddy, Traefik). The same cached hot path as Authorize; a database that cannot be
//! reached with nothing cached is an error (the proxy's failure mode decides), never a
//! silent allow.

use super::{Auth, Authorization};
use crate::domain::{Pass, PresentedToken, Refusal};
use crate::error::Result;

/// A proxied request to decide on.
#[derive(Debug, Default, Clone, Copy)]
pub struct GateCheck<'a> {
    pub presented: PresentedToken<'a>,
    /// The project the route is bound to, as the proxy says; `None`: the server default.
    pub project_id: Option<&'a str>,
    /// The route lets callers without a (valid) token through, as `public`.
    pub allow_public: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateDecision {
    Allow(Pass),
    Deny(Refusal),
}

impl Auth {
    pub async fn gate(&self, check: GateCheck<'_>) -> Result<GateDecision> {
        let policy = &self.inner.policy;
        let Some(project_id) = check
            .project_id
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .or(policy.authz_project_id.as_deref())
        else {
            return Ok(GateDecision::Deny(Refusal::NoProject));
        };
        let refusal = match check.presented.token(&policy.authz_cookie) {
            None => Refusal::NoToken,
            Some(token) => match self.authorize_for(token, Some(project_id)).await? {
                Authorization::User {
                    id,
                    uid,
                    name,
                    root,
                    project_id,
                    ..
                } => {
                    return Ok(GateDecision::Allow(Pass::user(
                        id,
                        &uid,
                        name.as_deref(),
                        &project_id,
                        root,
                    )));
                }
                Authorization::Public => Refusal::InvalidToken,
            },
        };
        Ok(if check.allow_public {
            GateDecision::Allow(Pass::public())
        } else {
            GateDecision::Deny(refusal)
        })
    }
}

impl Auth {
    /// RFC 7662 introspection for a resource server holding the project's admin token:
    /// what `token` stands for, if it is live and of that project; `None` otherwise
    /// (`{"active": false}`: unknown, expired, revoked and foreign tokens alike).
    pub async fn introspect(
        &self,
        admin_token: &str,
        token: &str,
    ) -> Result<Option<Authorization>> {
        let project = self.project_for_admin_token(admin_token).await?;
        Ok(match self.authorize_for(token, Some(&project.id)).await? {
            Authorization::Public => None,
            user => Some(user),
        })
    }
}
