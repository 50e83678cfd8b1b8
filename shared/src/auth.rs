//! Bearer-token authentication: JWTs with the claims `sub`, `tenant`,
//! `scope`, `exp`, `aud` and `iss`, the algorithm pinned.
//!
//! This version verifies HS256 (development). RS256/ES256 keys from files or
//! JWKS come with the command-side issue; the pinning stays the same.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::AUTHORIZATION;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;
use crate::event::is_valid_tenant;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    EventsWrite,
    ReportsRead,
    /// Everything, including operator actions.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsWrite => "events:write",
            Scope::ReportsRead => "reports:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        [Scope::EventsWrite, Scope::ReportsRead, Scope::Admin]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// The claims Tally reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    /// Space-separated scopes, as in OAuth 2.
    pub scope: String,
    pub exp: u64,
    pub iat: u64,
    pub aud: String,
    pub iss: String,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub tenant: String,
    scopes: Vec<Scope>,
}

impl Principal {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// `Ok` when the caller holds `scope` (or `admin`).
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope))
        }
    }
}

/// Why a request is not allowed. `MissingScope` is 403, the rest 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token in the Authorization header")]
    MissingToken,
    #[error("the Authorization header is not 'Bearer <token>'")]
    MalformedHeader,
    #[error("the token is not valid: {0}")]
    InvalidToken(String),
    #[error("the token's tenant is missing or not 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")]
    InvalidTenant,
    #[error("the token lacks the scope '{}'", .0.as_str())]
    MissingScope(Scope),
}

/// Verifies tokens. Cheap to share behind an `Arc`.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Authenticator {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[&config.audience]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        Authenticator {
            key: DecodingKey::from_secret(config.hs256_secret.expose_secret().as_bytes()),
            validation,
        }
    }

    /// Authenticates the caller from the `Authorization` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let header = headers.get(AUTHORIZATION).ok_or(AuthError::MissingToken)?;
        let header = header.to_str().map_err(|_| AuthError::MalformedHeader)?;
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::MalformedHeader)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::MalformedHeader);
        }
        self.verify(token.trim())
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let claims = data.claims;
        if !is_valid_tenant(&claims.tenant) {
            return Err(AuthError::InvalidTenant);
        }
        Ok(Principal {
            subject: claims.sub,
            tenant: claims.tenant,
            scopes: claims
                .scope
                .split_whitespace()
                .filter_map(Scope::parse)
                .collect(),
        })
    }
}

/// Mints an HS256 development token (the `token` command of the CLI).
pub fn mint_token(
    config: &AuthConfig,
    subject: &str,
    tenant: &str,
    scopes: &[Scope],
    ttl_secs: u64,
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let claims = Claims {
        sub: subject.to_owned(),
        tenant: tenant.to_owned(),
        scope: scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        exp: now + ttl_secs,
        iat: now,
        aud: config.audience.clone(),
        iss: config.issuer.clone(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(config.hs256_secret.expose_secret().as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config() -> AuthConfig {
        Config::defaults().auth
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_minted_token_authenticates() {
        let auth = Authenticator::new(&config());
        let token = mint_token(&config(), "ingest", "acme", &[Scope::EventsWrite], 60);
        let principal = auth
            .authenticate(&headers(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(principal.tenant, "acme");
        assert_eq!(principal.subject, "ingest");
        assert!(principal.require(Scope::EventsWrite).is_ok());
        assert_eq!(
            principal.require(Scope::ReportsRead),
            Err(AuthError::MissingScope(Scope::ReportsRead))
        );
    }

    #[test]
    fn admin_implies_every_scope() {
        let auth = Authenticator::new(&config());
        let principal = auth
            .verify(&mint_token(&config(), "op", "acme", &[Scope::Admin], 60))
            .unwrap();
        assert!(principal.has(Scope::EventsWrite) && principal.has(Scope::ReportsRead));
    }

    #[test]
    fn bad_headers_and_tokens_are_refused() {
        let auth = Authenticator::new(&config());
        assert_eq!(
            auth.authenticate(&HeaderMap::new()),
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            auth.authenticate(&headers("Basic abc")),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(
            auth.authenticate(&headers("Bearer ")),
            Err(AuthError::MalformedHeader)
        );
        assert!(matches!(
            auth.verify("not.a.jwt"),
            Err(AuthError::InvalidToken(_))
        ));

        let mut other = config();
        other.hs256_secret = "another-secret".to_owned().into();
        let forged = mint_token(&other, "x", "acme", &[Scope::Admin], 60);
        assert!(matches!(
            auth.verify(&forged),
            Err(AuthError::InvalidToken(_))
        ));

        let mut wrong_audience = config();
        wrong_audience.audience = "someone-else".into();
        let token = mint_token(&wrong_audience, "x", "acme", &[Scope::Admin], 60);
        assert!(matches!(
            auth.verify(&token),
            Err(AuthError::InvalidToken(_))
        ));

        let bad_tenant = mint_token(&config(), "x", "a.b", &[Scope::Admin], 60);
        assert_eq!(auth.verify(&bad_tenant), Err(AuthError::InvalidTenant));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let auth = Authenticator::new(&config());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = Claims {
            sub: "x".into(),
            tenant: "acme".into(),
            scope: "admin".into(),
            exp: now - 3600,
            iat: now - 7200,
            aud: config().audience,
            iss: config().issuer,
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(config().hs256_secret.expose_secret().as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            auth.verify(&expired),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        let auth = Authenticator::new(&config());
        // {"alg":"none","typ":"JWT"} with valid-looking claims and no signature.
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let token = mint_token(&config(), "x", "acme", &[Scope::Admin], 60);
        let claims = token.split('.').nth(1).unwrap();
        assert!(matches!(
            auth.verify(&format!("{header}.{claims}.")),
            Err(AuthError::InvalidToken(_))
        ));
    }
}
