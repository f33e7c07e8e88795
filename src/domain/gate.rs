//! The gate in front of other services (Envoy ext_authz, forward auth for nginx, Caddy
//! and Traefik): which token a proxied request carries, and what the proxy is told.
//! Plain rules, the same for every transport.

use super::bearer_token;

/// Headers the upstream receives on an allowed request. The gate also removes them from
/// the client's request, so nobody can forge them.
pub const USER_HEADERS: [&str; 6] = [
    "x-portcullis-role",
    "x-portcullis-user-id",
    "x-portcullis-uid",
    "x-portcullis-name",
    "x-portcullis-project-id",
    "x-portcullis-root",
];

/// The credentials a proxied request carries, as the proxy forwarded them.
#[derive(Debug, Default, Clone, Copy)]
pub struct PresentedToken<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `Cookie` header.
    pub cookie: Option<&'a str>,
    /// The `x-token` header (the published API's name for it).
    pub x_token: Option<&'a str>,
}

impl<'a> PresentedToken<'a> {
    /// The credentials among a request's headers; `header` looks one up by its lowercase
    /// name (each transport keeps headers its own way).
    pub fn from_headers(header: impl Fn(&str) -> Option<&'a str>) -> PresentedToken<'a> {
        PresentedToken {
            authorization: header("authorization"),
            cookie: header("cookie"),
            x_token: header("x-token"),
        }
    }

    /// The token Hasura's webhook passes on: `x-token` (the published API's header), else
    /// `Authorization: Bearer`. No cookie: the published webhook never read one.
    pub fn webhook_token(&self) -> &'a str {
        self.x_token
            .or_else(|| self.authorization.and_then(bearer_token))
            .unwrap_or_default()
    }

    /// The token: `Authorization: Bearer`, else the named cookie, else `x-token`.
    pub fn token(&self, cookie_name: &str) -> Option<&'a str> {
        self.authorization
            .and_then(bearer_token)
            .or_else(|| self.cookie.and_then(|c| cookie_value(c, cookie_name)))
            .or(self.x_token)
            .map(str::trim)
            .filter(|token| !token.is_empty())
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then(|| value.trim_matches('"'))
    })
}

/// A valid cookie name (RFC 6265's token: visible ASCII but separators).
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Who is let through: the headers for the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Headers to set (overwriting the client's).
    pub set: Vec<(&'static str, String)>,
    /// Headers of [`USER_HEADERS`] not set, to remove from the client's request.
    pub remove: Vec<&'static str>,
}

impl Pass {
    /// A user of the bound project.
    pub fn user(id: i64, uid: &str, name: Option<&str>, project_id: &str, root: bool) -> Pass {
        let mut set = vec![
            ("x-portcullis-role", "user".to_owned()),
            ("x-portcullis-user-id", id.to_string()),
            ("x-portcullis-uid", uid.to_owned()),
            ("x-portcullis-project-id", project_id.to_owned()),
            ("x-portcullis-root", root.to_string()),
        ];
        if let Some(name) = name {
            set.push(("x-portcullis-name", name.to_owned()));
        }
        Pass::completed(set)
    }

    /// Nobody signed in, on a route that lets anonymous callers through.
    pub fn public() -> Pass {
        Pass::completed(vec![("x-portcullis-role", "public".to_owned())])
    }

    fn completed(set: Vec<(&'static str, String)>) -> Pass {
        let remove = USER_HEADERS
            .into_iter()
            .filter(|header| !set.iter().any(|(name, _)| name == header))
            .collect();
        Pass { set, remove }
    }
}

/// Why a request is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token came with the request.
    NoToken,
    /// A token came, but it is unknown, expired, revoked or another project's.
    InvalidToken,
    /// The route names no project and the server has no default: nothing can be checked.
    NoProject,
}

impl Refusal {
    /// The HTTP status the client gets.
    pub fn status(self) -> u16 {
        match self {
            Refusal::NoToken | Refusal::InvalidToken => 401,
            Refusal::NoProject => 403,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750).
    pub fn challenge(self) -> Option<&'static str> {
        match self {
            Refusal::NoToken => Some("Bearer"),
            Refusal::InvalidToken => Some("Bearer error=\"invalid_token\""),
            Refusal::NoProject => None,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoToken => "a token is required",
            Refusal::InvalidToken => "the token is invalid, expired or revoked",
            Refusal::NoProject => {
                "no project is bound to this route: set project_id in the proxy's \
                 configuration, or --authz-project-id"
            }
        }
    }

    /// The small JSON body the client gets.
    pub fn body(self) -> String {
        serde_json::json!({ "error": self.message() }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_header_wins_then_the_cookie_then_x_token() {
        let all = PresentedToken {
            authorization: Some("Bearer from-header"),
            cookie: Some("a=1; portcullis_token=from-cookie"),
            x_token: Some("from-x-token"),
        };
        assert_eq!(all.token("portcullis_token"), Some("from-header"));
        let no_header = PresentedToken {
            authorization: None,
            ..all
        };
        assert_eq!(no_header.token("portcullis_token"), Some("from-cookie"));
        assert_eq!(no_header.token("other"), Some("from-x-token"));
        assert_eq!(PresentedToken::default().token("portcullis_token"), None);
        let basic = PresentedToken {
            authorization: Some("Basic dXNlcjpwYXNz"),
            ..PresentedToken::default()
        };
        assert_eq!(basic.token("portcullis_token"), None);
    }

    #[test]
    fn the_webhook_reads_x_token_first_then_bearer_and_never_a_cookie() {
        let both = PresentedToken {
            authorization: Some("Bearer from-header"),
            cookie: Some("portcullis_token=from-cookie"),
            x_token: Some("from-x-token"),
        };
        assert_eq!(both.webhook_token(), "from-x-token");
        let bearer = PresentedToken {
            x_token: None,
            ..both
        };
        assert_eq!(bearer.webhook_token(), "from-header");
        let cookie_only = PresentedToken {
            cookie: Some("portcullis_token=from-cookie"),
            ..PresentedToken::default()
        };
        assert_eq!(cookie_only.webhook_token(), "");
    }

    #[test]
    fn every_user_header_is_either_set_or_removed() {
        for pass in [
            Pass::user(1, "u", None, "p", false),
            Pass::user(1, "u", Some("a@b.test"), "p", true),
            Pass::public(),
        ] {
            for header in USER_HEADERS {
                let set = pass.set.iter().filter(|(name, _)| *name == header).count();
                let removed = pass.remove.iter().filter(|name| **name == header).count();
                assert_eq!(set + removed, 1, "{header} in {pass:?}");
            }
        }
    }

    #[test]
    fn cookie_names_follow_rfc_6265() {
        assert!(is_cookie_name("portcullis_token"));
        assert!(!is_cookie_name("a b") && !is_cookie_name("a=b") && !is_cookie_name(""));
    }
}
