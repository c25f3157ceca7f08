//! Who is asking: an admin (the configured bearer token) or anyone.

use sha2::{Digest, Sha256};

/// The caller's role, put into each GraphQL request's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Public,
}

/// The admin token, kept as its SHA-256 so that comparisons take the same time whatever the guess.
#[derive(Clone, Default)]
pub struct AdminToken(Option<[u8; 32]>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AdminToken(<set>)"
        } else {
            "AdminToken(none)"
        })
    }
}

impl AdminToken {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(str::trim).filter(|t| !t.is_empty()).map(digest))
    }

    /// The role an `Authorization` value (`Bearer <token>`) grants.
    pub fn role(&self, authorization: Option<&str>) -> Role {
        let presented = authorization
            .map(str::trim)
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim);
        match (self.0, presented) {
            (Some(expected), Some(token)) if digest(token) == expected => Role::Admin,
            _ => Role::Public,
        }
    }

    /// True when the value names a token that is not the admin token (a rejected credential).
    pub fn rejects(&self, authorization: Option<&str>) -> bool {
        authorization.is_some_and(|value| !value.trim().is_empty())
            && self.role(authorization) != Role::Admin
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_bearer_token_is_admin() {
        let token = AdminToken::new(Some("s3cret"));
        assert_eq!(token.role(Some("Bearer s3cret")), Role::Admin);
        assert_eq!(token.role(Some("Bearer wrong")), Role::Public);
        assert_eq!(token.role(Some("s3cret")), Role::Public);
        assert_eq!(token.role(None), Role::Public);
        assert_eq!(AdminToken::new(None).role(Some("Bearer ")), Role::Public);
        assert!(token.rejects(Some("Bearer wrong")) && !token.rejects(None));
    }
}
