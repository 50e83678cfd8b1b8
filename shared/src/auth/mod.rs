//! Bearer-token authentication: JWTs with the claims `sub`, `tenant`,
//! `scope`, `exp`, `aud` and `iss` (`nbf` and `iat` optional).
//!
//! Keys come from `[auth]`: the HS256 secret (development; off in
//! production), a PEM public key (RSA → RS256, EC P-256 → ES256) and a JWKS
//! file (each key pinned to its `alg`, or to what its `kty`/`crv` imply).
//!
//! Invariants:
//! - every key is pinned to exactly one algorithm; a token is checked only
//!   against keys pinned to the `alg` in its header, and jsonwebtoken is
//!   told to accept that one algorithm;
//! - an algorithm outside HS256/RS256/ES256 (`none` in any casing included)
//!   is refused before any cryptography runs;
//! - HS256 verifies with the configured secret alone, so a public key can
//!   never serve as an HMAC secret (RS/HS key confusion), and HS256 is not
//!   accepted at all when `hs256_enabled = false`;
//! - a token with a `kid` is checked against that key only; keys embedded in
//!   or linked from a token (`jwk`, `jku`, `x5u`, `x5c`) are never used;
//! - the signature is verified before any claim is read;
//! - errors, logs and `Debug` output never contain key material;
//! - a token verified once is remembered by its exact text (`verified.rs`),
//!   and its `exp` and `nbf` are still checked on every request.

mod keys;
#[cfg(test)]
mod tests;
mod verified;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::AuthConfig;
use crate::event::is_valid_tenant;

pub use keys::{KeyError, MAX_LEEWAY_SECS, MIN_HS256_SECRET_BYTES};

/// Longest token accepted, in bytes: far above any honest token (an RS256
/// signature with a 4096-bit key is 683 characters), small enough that a
/// hostile one costs nothing to refuse.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

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

/// The claims of a token [`mint_token`] issues.
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
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token in the Authorization header")]
    MissingToken,
    #[error("the Authorization header is not 'Bearer <token>'")]
    MalformedHeader,
    #[error("the token is not valid: {0}")]
    InvalidToken(TokenError),
    #[error("the token's tenant is missing or not 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")]
    InvalidTenant,
    #[error("the token lacks the scope '{}'", .0.as_str())]
    MissingScope(Scope),
}

/// Why a token was refused (all 401). Short, and safe to show the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    /// Not three base64url segments, or a header or payload that is not a
    /// JSON object of the expected shape.
    #[error("malformed")]
    Malformed,
    /// The header's `alg` is not one a configured key is pinned to (`none`,
    /// unknown names, HS256 when disabled, or not the `kid`'s algorithm).
    #[error("algorithm not accepted")]
    UnacceptedAlgorithm,
    #[error("unknown key id (kid)")]
    UnknownKey,
    /// The header lists critical extensions (`crit`), which Tally does not
    /// implement (RFC 7515, section 4.1.11).
    #[error("unsupported critical header (crit)")]
    UnsupportedCritical,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not yet valid (nbf)")]
    NotYetValid,
    #[error("wrong audience (aud)")]
    WrongAudience,
    #[error("wrong issuer (iss)")]
    WrongIssuer,
    /// A required claim (`exp`, `aud`, `iss`, `sub`) is absent, or of a type
    /// jsonwebtoken cannot read.
    #[error("missing or unreadable claim '{0}'")]
    MissingClaim(&'static str),
    #[error("invalid claim '{0}'")]
    InvalidClaim(&'static str),
}

impl From<TokenError> for AuthError {
    fn from(error: TokenError) -> AuthError {
        AuthError::InvalidToken(error)
    }
}

/// A key and the validation that accepts its one algorithm.
struct PinnedKey {
    key: keys::Key,
    validation: Validation,
}

/// Verifies tokens. Cheap to share behind an `Arc`.
pub struct Authenticator {
    keys: Vec<PinnedKey>,
    /// Clock skew allowed for `exp` and `nbf` (every key's validation has it).
    leeway: u64,
    verified: verified::Verified,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.key))
            .finish()
    }
}

impl Authenticator {
    /// Loads and checks the keys `config` enables (reading the key files).
    pub fn from_config(config: &AuthConfig) -> Result<Authenticator, KeyError> {
        let keys = keys::load(config)?
            .into_iter()
            .map(|key| PinnedKey {
                validation: validation(key.alg, config),
                key,
            })
            .collect::<Vec<_>>();
        let loaded: Vec<&keys::Key> = keys.iter().map(|k| &k.key).collect();
        tracing::info!(keys = ?loaded, "token verification keys loaded");
        Ok(Authenticator {
            keys,
            leeway: config.leeway_secs,
            verified: verified::Verified::default(),
        })
    }

    /// [`Authenticator::from_config`] for configurations known to be valid,
    /// such as the built-in HS256-only defaults (tests, the token minter).
    ///
    /// # Panics
    ///
    /// When `from_config` fails: a key file cannot be loaded, the HS256
    /// secret is too short, no key is enabled. Services should call
    /// `from_config` and report the error instead.
    pub fn new(config: &AuthConfig) -> Authenticator {
        Self::from_config(config).unwrap_or_else(|e| panic!("{e}"))
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

    /// Verifies `token` and returns its caller.
    ///
    /// A token without a `scope` claim (or with only unknown scopes) is
    /// valid but allows nothing: every [`Principal::require`] then fails with
    /// `MissingScope`, a 403. The caller is authenticated, only not
    /// authorised (RFC 6750's `insufficient_scope`). A `scope` that is not a
    /// string is a malformed token, a 401.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong.into());
        }
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(known) = self.verified.get(token, now, self.leeway) {
            return Ok(known?);
        }
        let (principal, window) = self.verify_signed(token)?;
        if let Some((exp, nbf)) = window {
            let entry = verified::Entry {
                principal: principal.clone(),
                exp,
                nbf,
            };
            self.verified.insert(token, entry, now, self.leeway);
        }
        Ok(principal)
    }

    /// [`Authenticator::verify`] without the cache: the signature, then the
    /// claims. With the caller, the token's `exp` and `nbf` when both are
    /// plain integers (what the cache needs to keep checking them).
    fn verify_signed(&self, token: &str) -> Result<(Principal, Option<Window>), AuthError> {
        let header = read_header(token)?;
        if header.crit.is_some() {
            return Err(TokenError::UnsupportedCritical.into());
        }
        let alg = match header.alg.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            _ => return Err(TokenError::UnacceptedAlgorithm.into()),
        };
        let candidates: Vec<&PinnedKey> = match &header.kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.key.kid.as_ref() == Some(kid))
                    .ok_or(TokenError::UnknownKey)?;
                vec![key]
            }
            None => self.keys.iter().collect(),
        };
        let mut pinned = candidates
            .into_iter()
            .filter(|k| k.key.alg == alg)
            .peekable();
        if pinned.peek().is_none() {
            return Err(TokenError::UnacceptedAlgorithm.into());
        }
        for key in pinned {
            match jsonwebtoken::decode::<TokenClaims>(token, &key.key.decoding, &key.validation) {
                Ok(data) => {
                    let window = window(&data.claims);
                    return Ok((principal(data.claims)?, window));
                }
                // Without a kid, another key pinned to the algorithm may fit.
                Err(e) if token_error(e.kind()) == TokenError::BadSignature => continue,
                Err(e) => return Err(token_error(e.kind()).into()),
            }
        }
        Err(TokenError::BadSignature.into())
    }
}

/// Accepts `alg` only; checks `exp`, `nbf` (when present), `aud` and `iss`.
fn validation(alg: Algorithm, config: &AuthConfig) -> Validation {
    let mut validation = Validation::new(alg);
    validation.set_audience(&[&config.audience]);
    validation.set_issuer(&[&config.issuer]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.leeway = config.leeway_secs;
    validation
}

/// The part of the JOSE header read before choosing a key.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

fn read_header(token: &str) -> Result<TokenHeader, TokenError> {
    let mut segments = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

/// The claims Tally reads, each loosely typed so that a claim of the wrong
/// type is reported as such rather than as a malformed payload. Read only
/// after the signature verified; `exp`, `nbf`, `aud` and `iss` are checked
/// by jsonwebtoken.
#[derive(Deserialize)]
struct TokenClaims {
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    tenant: Option<Value>,
    #[serde(default)]
    scope: Option<Value>,
    /// Checked by jsonwebtoken; read only to keep checking a cached token.
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    nbf: Option<Value>,
}

/// A token's `exp` and optional `nbf`.
type Window = (u64, Option<u64>);

/// The validity window of verified `claims`, if it is plain integers.
fn window(claims: &TokenClaims) -> Option<Window> {
    let exp = claims.exp.as_ref()?.as_u64()?;
    let nbf = match &claims.nbf {
        None | Some(Value::Null) => None,
        Some(nbf) => Some(nbf.as_u64()?),
    };
    Some((exp, nbf))
}

fn principal(claims: TokenClaims) -> Result<Principal, AuthError> {
    let subject = match claims.sub {
        Some(Value::String(sub)) if !sub.is_empty() => sub,
        _ => return Err(TokenError::InvalidClaim("sub").into()),
    };
    let tenant = match claims.tenant {
        Some(Value::String(tenant)) if is_valid_tenant(&tenant) => tenant,
        _ => return Err(AuthError::InvalidTenant),
    };
    let scopes = match claims.scope {
        None => Vec::new(),
        Some(Value::String(scope)) => scope.split_whitespace().filter_map(Scope::parse).collect(),
        Some(_) => return Err(TokenError::InvalidClaim("scope").into()),
    };
    Ok(Principal {
        subject,
        tenant,
        scopes,
    })
}

fn token_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim_name(claim)),
        ErrorKind::InvalidClaimFormat(claim) => TokenError::InvalidClaim(claim_name(claim)),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            TokenError::UnacceptedAlgorithm
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => TokenError::Malformed,
        // The signature did not verify. Key problems are caught at start-up,
        // so whatever else the crypto reports means the same.
        _ => TokenError::BadSignature,
    }
}

/// The registered claims jsonwebtoken checks, as `'static` names.
fn claim_name(claim: &str) -> &'static str {
    ["exp", "nbf", "aud", "iss", "sub"]
        .into_iter()
        .find(|name| *name == claim)
        .unwrap_or("registered claim")
}

/// Mints an HS256 development token (the `token` command of the CLI).
/// Refused by an [`Authenticator`] whose configuration has
/// `hs256_enabled = false`.
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
