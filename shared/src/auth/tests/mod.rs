//! One test per attack, named after it; `check` verifies a token and compares
//! the outcome. Keys are the test-only fixtures in `shared/tests/keys/`.

use std::path::PathBuf;

use http::StatusCode;
use serde_json::json;

use super::*;
use crate::config::Config;
use crate::http::ApiError;

mod attacks;
mod key_loading;
mod remembered;

const RSA_PRIVATE: &str = include_str!("../../../tests/keys/rsa.key.pem");
const RSA_PUBLIC: &str = include_str!("../../../tests/keys/rsa.pub.pem");
const EC_PRIVATE: &str = include_str!("../../../tests/keys/ec.key.pem");
const EC_PUBLIC: &str = include_str!("../../../tests/keys/ec.pub.pem");
const EC_OTHER_PRIVATE: &str = include_str!("../../../tests/keys/ec-other.key.pem");
const JWKS: &str = include_str!("../../../tests/keys/jwks.json");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

/// The built-in defaults: HS256 only.
fn dev() -> AuthConfig {
    Config::development().auth
}

/// `dev()` plus key files, HS256 on or off.
fn keyed(hs256: bool, pem: Option<&str>, jwks: Option<&str>) -> AuthConfig {
    let mut config = dev();
    config.hs256_enabled = hs256;
    config.public_key_file = pem.map(fixture);
    config.jwks_file = jwks.map(fixture);
    config
}

fn authenticator(config: &AuthConfig) -> Authenticator {
    Authenticator::from_config(config).unwrap_or_else(|e| panic!("{e}"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Valid claims for the default issuer and audience.
fn claims() -> Value {
    json!({
        "sub": "ingest",
        "tenant": "acme",
        "scope": "events:write reports:read",
        "exp": now() + 300,
        "iat": now(),
        "aud": "tally",
        "iss": "tally",
    })
}

fn with(field: &str, value: Value) -> Value {
    let mut claims = claims();
    claims[field] = value;
    claims
}

fn without(field: &str) -> Value {
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove(field);
    claims
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap()
}

fn ec_other() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_OTHER_PRIVATE.as_bytes()).unwrap()
}

fn hs(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

fn dev_secret() -> EncodingKey {
    hs(dev().hs256_secret.expose_secret())
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with any header, payload bytes and signature segment.
fn forge(header: &Value, payload: impl AsRef<[u8]>, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header.to_string()), b64(payload))
}

/// A token with any header and payload, correctly signed with `key`.
fn sign_raw(
    header: &Value,
    payload: impl AsRef<[u8]>,
    alg: Algorithm,
    key: &EncodingKey,
) -> String {
    let message = format!("{}.{}", b64(header.to_string()), b64(payload));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

/// Verifies `token`; `Ok(())` expects the caller of `claims()`.
fn check(auth: &Authenticator, token: &str, expected: Result<(), AuthError>) {
    let shown = if token.len() > 120 {
        format!("{}...", &token[..120])
    } else {
        token.to_owned()
    };
    let result = auth.verify(token);
    match (&result, &expected) {
        (Ok(principal), Ok(())) => {
            assert_eq!(
                (principal.subject.as_str(), principal.tenant.as_str()),
                ("ingest", "acme"),
                "verifying {shown}"
            );
        }
        _ => assert_eq!(
            result.as_ref().map(|_| ()),
            expected.as_ref().map(|_| ()),
            "verifying {shown}: got {result:?}"
        ),
    }
}

/// `auth` accepts a token of `alg` (with `kid`) signed with `key`.
fn accepts(auth: &Authenticator, alg: Algorithm, kid: Option<&str>, key: &EncodingKey) {
    check(auth, &sign(alg, kid, &claims(), key), Ok(()));
}

fn refused(error: TokenError) -> Result<(), AuthError> {
    Err(AuthError::InvalidToken(error))
}

fn status(error: AuthError) -> StatusCode {
    ApiError::from(error).status()
}

// --- Accepted tokens ---------------------------------------------------------

#[test]
fn minted_development_tokens_authenticate() {
    let auth = Authenticator::new(&dev());
    let token = mint_token(&dev(), "ingest", "acme", &[Scope::EventsWrite], 60);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    let principal = auth.authenticate(&headers).unwrap();
    assert_eq!(
        (principal.subject.as_str(), principal.tenant.as_str()),
        ("ingest", "acme")
    );
    assert!(principal.require(Scope::EventsWrite).is_ok());
    assert_eq!(
        principal.require(Scope::ReportsRead),
        Err(AuthError::MissingScope(Scope::ReportsRead))
    );
    let admin = auth
        .verify(&mint_token(&dev(), "op", "acme", &[Scope::Admin], 60))
        .unwrap();
    assert!(admin.has(Scope::EventsWrite) && admin.has(Scope::ReportsRead));
}

#[test]
fn bad_authorization_headers_are_refused() {
    let auth = Authenticator::new(&dev());
    let token = mint_token(&dev(), "ingest", "acme", &[Scope::EventsWrite], 60);
    let cases = [
        (None, AuthError::MissingToken),
        (Some("Basic abc".to_owned()), AuthError::MalformedHeader),
        (Some("Bearer ".to_owned()), AuthError::MalformedHeader),
        (Some(format!("Bearer{token}")), AuthError::MalformedHeader),
        (Some(format!("Token {token}")), AuthError::MalformedHeader),
        (
            Some("Bearer garbage".to_owned()),
            AuthError::InvalidToken(TokenError::Malformed),
        ),
    ];
    for (value, expected) in cases {
        let mut headers = HeaderMap::new();
        if let Some(value) = &value {
            headers.insert(AUTHORIZATION, value.parse().unwrap());
        }
        assert_eq!(
            auth.authenticate(&headers),
            Err(expected),
            "Authorization: {value:?}"
        );
    }
}

#[test]
fn rs256_from_a_pem_key_is_accepted() {
    let auth = authenticator(&keyed(false, Some("rsa.pub.pem"), None));
    accepts(&auth, Algorithm::RS256, None, &rsa());
}

#[test]
fn es256_from_a_pem_key_is_accepted() {
    let auth = authenticator(&keyed(false, Some("ec.pub.pem"), None));
    accepts(&auth, Algorithm::ES256, None, &ec());
}

#[test]
fn rs256_and_es256_from_a_jwks_file_are_accepted() {
    let auth = authenticator(&keyed(false, None, Some("jwks.json")));
    accepts(&auth, Algorithm::RS256, Some("test-rsa"), &rsa());
    accepts(&auth, Algorithm::ES256, Some("test-ec"), &ec());
    // Without a kid, the keys pinned to the token's algorithm are tried.
    accepts(&auth, Algorithm::RS256, None, &rsa());
    accepts(&auth, Algorithm::ES256, None, &ec());
}

#[test]
fn every_configured_source_verifies_at_once() {
    let auth = authenticator(&keyed(true, Some("ec-other.pub.pem"), Some("jwks.json")));
    check(
        &auth,
        &mint_token(&dev(), "ingest", "acme", &[], 60),
        Ok(()),
    );
    accepts(&auth, Algorithm::RS256, Some("test-rsa"), &rsa());
    // No kid: the JWKS EC key fails, the PEM EC key fits.
    accepts(&auth, Algorithm::ES256, None, &ec_other());
}
