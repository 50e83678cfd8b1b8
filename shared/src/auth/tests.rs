//! One test per attack, named after it; `check` verifies a token and compares
//! the outcome. Keys are the test-only fixtures in `shared/tests/keys/`.

use std::path::PathBuf;

use http::StatusCode;
use serde_json::json;

use super::*;
use crate::config::Config;
use crate::http::ApiError;

const RSA_PRIVATE: &str = include_str!("../../tests/keys/rsa.key.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/keys/rsa.pub.pem");
const EC_PRIVATE: &str = include_str!("../../tests/keys/ec.key.pem");
const EC_PUBLIC: &str = include_str!("../../tests/keys/ec.pub.pem");
const EC_OTHER_PRIVATE: &str = include_str!("../../tests/keys/ec-other.key.pem");
const JWKS: &str = include_str!("../../tests/keys/jwks.json");

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
    check(
        &auth,
        &sign(Algorithm::RS256, None, &claims(), &rsa()),
        Ok(()),
    );
}

#[test]
fn es256_from_a_pem_key_is_accepted() {
    let auth = authenticator(&keyed(false, Some("ec.pub.pem"), None));
    check(
        &auth,
        &sign(Algorithm::ES256, None, &claims(), &ec()),
        Ok(()),
    );
}

#[test]
fn rs256_and_es256_from_a_jwks_file_are_accepted() {
    let auth = authenticator(&keyed(false, None, Some("jwks.json")));
    check(
        &auth,
        &sign(Algorithm::RS256, Some("test-rsa"), &claims(), &rsa()),
        Ok(()),
    );
    check(
        &auth,
        &sign(Algorithm::ES256, Some("test-ec"), &claims(), &ec()),
        Ok(()),
    );
    // Without a kid, the keys pinned to the token's algorithm are tried.
    check(
        &auth,
        &sign(Algorithm::RS256, None, &claims(), &rsa()),
        Ok(()),
    );
    check(
        &auth,
        &sign(Algorithm::ES256, None, &claims(), &ec()),
        Ok(()),
    );
}

#[test]
fn every_configured_source_verifies_at_once() {
    let auth = authenticator(&keyed(true, Some("ec-other.pub.pem"), Some("jwks.json")));
    check(
        &auth,
        &mint_token(&dev(), "ingest", "acme", &[], 60),
        Ok(()),
    );
    check(
        &auth,
        &sign(Algorithm::RS256, Some("test-rsa"), &claims(), &rsa()),
        Ok(()),
    );
    // No kid: the JWKS EC key fails, the PEM EC key fits.
    check(
        &auth,
        &sign(Algorithm::ES256, None, &claims(), &ec_other()),
        Ok(()),
    );
}

// --- Attacks -----------------------------------------------------------------

#[test]
fn alg_none_is_refused_in_any_casing() {
    let configs = [dev(), keyed(false, Some("rsa.pub.pem"), Some("jwks.json"))];
    for config in &configs {
        let auth = authenticator(config);
        for alg in ["none", "None", "NONE", "nOnE", "NoNe"] {
            let header = json!({"alg": alg, "typ": "JWT"});
            for signature in ["", "AAAA"] {
                let token = forge(&header, claims().to_string(), signature);
                check(&auth, &token, refused(TokenError::UnacceptedAlgorithm));
            }
            let with_kid = json!({"alg": alg, "kid": "test-rsa"});
            let token = forge(&with_kid, claims().to_string(), "");
            check(&auth, &token, refused(TokenError::UnacceptedAlgorithm));
        }
    }
}

#[test]
fn unsupported_algorithms_are_refused_before_verification() {
    let auth = authenticator(&keyed(true, Some("rsa.pub.pem"), Some("jwks.json")));
    for alg in [
        "hs256", "Rs256", "HS384", "HS512", "RS512", "PS256", "ES384", "EdDSA", "", " RS256",
    ] {
        let token = forge(&json!({"alg": alg}), claims().to_string(), "AAAA");
        check(&auth, &token, refused(TokenError::UnacceptedAlgorithm));
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic key confusion: the attacker knows the public key and
    // signs HS256 with its PEM text (or DER, or JWK modulus) as the secret.
    let secrets = [
        RSA_PUBLIC.to_owned(),
        RSA_PUBLIC.trim().to_owned(),
        RSA_PUBLIC.replace('\n', "\r\n"),
        JWKS.to_owned(),
    ];
    for secret in &secrets {
        let forged = sign(Algorithm::HS256, None, &claims(), &hs(secret));
        // HS256 on: it verifies against hs256_secret only.
        let auth_on = authenticator(&keyed(true, Some("rsa.pub.pem"), Some("jwks.json")));
        check(&auth_on, &forged, refused(TokenError::BadSignature));
        // HS256 off: no key is pinned to HS256.
        let auth_off = authenticator(&keyed(false, Some("rsa.pub.pem"), Some("jwks.json")));
        check(&auth_off, &forged, refused(TokenError::UnacceptedAlgorithm));
        // Naming the RSA key's kid does not make it an HMAC key.
        let forged = sign(Algorithm::HS256, Some("test-rsa"), &claims(), &hs(secret));
        check(&auth_on, &forged, refused(TokenError::UnacceptedAlgorithm));
        check(&auth_off, &forged, refused(TokenError::UnacceptedAlgorithm));
    }
}

#[test]
fn hs256_signed_with_the_ec_public_key_is_refused() {
    let forged = sign(Algorithm::HS256, None, &claims(), &hs(EC_PUBLIC));
    check(
        &authenticator(&keyed(true, Some("ec.pub.pem"), None)),
        &forged,
        refused(TokenError::BadSignature),
    );
    check(
        &authenticator(&keyed(false, Some("ec.pub.pem"), None)),
        &forged,
        refused(TokenError::UnacceptedAlgorithm),
    );
}

#[test]
fn rs256_against_an_es256_only_config_is_refused() {
    let token = sign(Algorithm::RS256, None, &claims(), &rsa());
    for hs256 in [false, true] {
        let auth = authenticator(&keyed(hs256, Some("ec.pub.pem"), None));
        check(&auth, &token, refused(TokenError::UnacceptedAlgorithm));
    }
    // A kid naming an ES256 key does not let an RS256 token through.
    let auth = authenticator(&keyed(false, None, Some("jwks.json")));
    let token = sign(Algorithm::RS256, Some("test-ec"), &claims(), &rsa());
    check(&auth, &token, refused(TokenError::UnacceptedAlgorithm));
}

#[test]
fn hs256_is_refused_when_disabled() {
    let auth = authenticator(&keyed(false, Some("rsa.pub.pem"), None));
    let minted = mint_token(&dev(), "ingest", "acme", &[Scope::Admin], 60);
    check(&auth, &minted, refused(TokenError::UnacceptedAlgorithm));
}

#[test]
fn tampered_payload_is_refused() {
    let cases = [
        (Algorithm::HS256, dev(), dev_secret()),
        (
            Algorithm::RS256,
            keyed(false, Some("rsa.pub.pem"), None),
            rsa(),
        ),
        (
            Algorithm::ES256,
            keyed(false, Some("ec.pub.pem"), None),
            ec(),
        ),
    ];
    for (alg, config, key) in cases {
        let auth = authenticator(&config);
        let genuine = sign(alg, None, &with("scope", json!("events:write")), &key);
        let [header, _, signature] = genuine.split('.').collect::<Vec<_>>()[..] else {
            panic!("{genuine}")
        };
        for payload in [
            with("scope", json!("admin")),
            with("tenant", json!("victim")),
        ] {
            let tampered = format!("{header}.{}.{signature}", b64(payload.to_string()));
            check(&auth, &tampered, refused(TokenError::BadSignature));
        }
    }
}

#[test]
fn tampered_signature_is_refused() {
    let cases = [
        (Algorithm::HS256, dev(), dev_secret()),
        (
            Algorithm::RS256,
            keyed(false, Some("rsa.pub.pem"), None),
            rsa(),
        ),
        (
            Algorithm::ES256,
            keyed(false, Some("ec.pub.pem"), None),
            ec(),
        ),
    ];
    for (alg, config, key) in cases {
        let auth = authenticator(&config);
        let genuine = sign(alg, None, &claims(), &key);
        let (message, signature) = genuine.rsplit_once('.').unwrap();
        let flipped = format!(
            "{}{}",
            if signature.starts_with('A') { 'B' } else { 'A' },
            &signature[1..]
        );
        let other = sign(alg, None, &with("sub", json!("other")), &key);
        let signatures = [
            flipped.as_str(),
            &signature[..32],
            "",
            "AAAA",
            other.rsplit_once('.').unwrap().1,
        ];
        for forged in signatures {
            check(
                &auth,
                &format!("{message}.{forged}"),
                refused(TokenError::BadSignature),
            );
        }
        check(
            &auth,
            &format!("{message}.!{}", &signature[1..]),
            refused(TokenError::Malformed),
        );
    }
}

#[test]
fn a_signature_from_another_key_is_refused() {
    let auth = authenticator(&keyed(false, Some("ec.pub.pem"), None));
    check(
        &auth,
        &sign(Algorithm::ES256, None, &claims(), &ec_other()),
        refused(TokenError::BadSignature),
    );
    let mut other = dev();
    other.hs256_secret = "another-secret-at-least-32-bytes-long".to_owned().into();
    let forged = mint_token(&other, "ingest", "acme", &[Scope::Admin], 60);
    check(
        &Authenticator::new(&dev()),
        &forged,
        refused(TokenError::BadSignature),
    );
}

#[test]
fn a_kid_pins_its_key() {
    // ec-other is configured (PEM), but the token names the JWKS key test-ec.
    let auth = authenticator(&keyed(false, Some("ec-other.pub.pem"), Some("jwks.json")));
    let token = sign(Algorithm::ES256, Some("test-ec"), &claims(), &ec_other());
    check(&auth, &token, refused(TokenError::BadSignature));
}

#[test]
fn unknown_kid_is_refused() {
    let auth = authenticator(&keyed(true, None, Some("jwks.json")));
    for kid in ["nope", "", "TEST-RSA", "test-rsa ", "test-enc"] {
        let token = sign(Algorithm::RS256, Some(kid), &claims(), &rsa());
        check(&auth, &token, refused(TokenError::UnknownKey));
    }
    // The HS256 secret has no kid either.
    let token = sign(Algorithm::HS256, Some("dev"), &claims(), &dev_secret());
    check(&auth, &token, refused(TokenError::UnknownKey));
}

#[test]
fn keys_embedded_in_the_header_are_ignored() {
    // The attacker signs with their own key and offers it in the header.
    let attacker = EncodingKey::from_ec_pem(EC_OTHER_PRIVATE.as_bytes()).unwrap();
    let their_jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&attacker, Algorithm::ES256).unwrap();
    let auth = authenticator(&keyed(false, Some("ec.pub.pem"), None));
    let headers = [
        json!({"alg": "ES256", "jwk": their_jwk}),
        json!({"alg": "ES256", "jku": "https://attacker.example/jwks.json"}),
        json!({"alg": "ES256", "x5u": "https://attacker.example/cert.pem"}),
    ];
    for header in headers {
        let token = sign_raw(&header, claims().to_string(), Algorithm::ES256, &attacker);
        check(&auth, &token, refused(TokenError::BadSignature));
    }
}

#[test]
fn critical_header_extensions_are_refused() {
    let auth = Authenticator::new(&dev());
    let header = json!({"alg": "HS256", "crit": ["exp"], "exp": 1});
    let token = sign_raw(
        &header,
        claims().to_string(),
        Algorithm::HS256,
        &dev_secret(),
    );
    check(&auth, &token, refused(TokenError::UnsupportedCritical));
}

#[test]
fn expired_token_is_refused() {
    let auth = authenticator(&keyed(true, Some("rsa.pub.pem"), None));
    let cases = [
        (now() - 3600, refused(TokenError::Expired)),
        (now() - 31, refused(TokenError::Expired)),
        // Within the 30 s leeway.
        (now() - 10, Ok(())),
        (0, refused(TokenError::Expired)),
    ];
    for (exp, expected) in cases {
        let claims = with("exp", json!(exp));
        check(
            &auth,
            &sign(Algorithm::RS256, None, &claims, &rsa()),
            expected.clone(),
        );
        check(
            &auth,
            &sign(Algorithm::HS256, None, &claims, &dev_secret()),
            expected,
        );
    }
}

#[test]
fn token_not_yet_valid_is_refused() {
    let auth = authenticator(&keyed(false, Some("ec.pub.pem"), None));
    let cases = [
        (now() + 3600, refused(TokenError::NotYetValid)),
        (now() + 40, refused(TokenError::NotYetValid)),
        (now() + 10, Ok(())),
        (now() - 10, Ok(())),
    ];
    for (nbf, expected) in cases {
        let token = sign(Algorithm::ES256, None, &with("nbf", json!(nbf)), &ec());
        check(&auth, &token, expected);
    }
}

#[test]
fn wrong_audience_is_refused() {
    let auth = authenticator(&keyed(false, Some("rsa.pub.pem"), None));
    let cases = [
        (json!("someone-else"), refused(TokenError::WrongAudience)),
        (json!("Tally"), refused(TokenError::WrongAudience)),
        (json!(["someone-else"]), refused(TokenError::WrongAudience)),
        (json!([]), refused(TokenError::WrongAudience)),
        (json!(42), refused(TokenError::MissingClaim("aud"))),
        (json!(["someone-else", "tally"]), Ok(())),
    ];
    for (aud, expected) in cases {
        let token = sign(Algorithm::RS256, None, &with("aud", aud), &rsa());
        check(&auth, &token, expected);
    }
    let token = sign(Algorithm::RS256, None, &without("aud"), &rsa());
    check(&auth, &token, refused(TokenError::MissingClaim("aud")));
}

#[test]
fn wrong_issuer_is_refused() {
    let auth = authenticator(&keyed(false, Some("rsa.pub.pem"), None));
    for iss in [json!("evil"), json!("tally "), json!(["evil"])] {
        let token = sign(Algorithm::RS256, None, &with("iss", iss), &rsa());
        check(&auth, &token, refused(TokenError::WrongIssuer));
    }
    let token = sign(Algorithm::RS256, None, &without("iss"), &rsa());
    check(&auth, &token, refused(TokenError::MissingClaim("iss")));
}

#[test]
fn missing_registered_claims_are_refused() {
    let auth = authenticator(&keyed(false, Some("rsa.pub.pem"), None));
    let cases = [
        (without("exp"), refused(TokenError::MissingClaim("exp"))),
        (without("sub"), refused(TokenError::MissingClaim("sub"))),
        (
            with("sub", json!("")),
            refused(TokenError::InvalidClaim("sub")),
        ),
        (
            with("exp", json!("tomorrow")),
            refused(TokenError::MissingClaim("exp")),
        ),
        (
            with("exp", json!(-1)),
            refused(TokenError::MissingClaim("exp")),
        ),
        (
            with("exp", json!(1e300)),
            refused(TokenError::MissingClaim("exp")),
        ),
        (
            with("nbf", json!("now")),
            refused(TokenError::InvalidClaim("nbf")),
        ),
    ];
    for (claims, expected) in cases {
        check(
            &auth,
            &sign(Algorithm::RS256, None, &claims, &rsa()),
            expected,
        );
    }
}

#[test]
fn missing_tenant_is_refused() {
    let auth = authenticator(&keyed(false, Some("rsa.pub.pem"), None));
    for claims in [without("tenant"), with("tenant", Value::Null)] {
        let token = sign(Algorithm::RS256, None, &claims, &rsa());
        check(&auth, &token, Err(AuthError::InvalidTenant));
    }
    assert_eq!(status(AuthError::InvalidTenant), StatusCode::UNAUTHORIZED);
}

#[test]
fn invalid_tenant_is_refused() {
    let auth = authenticator(&keyed(false, Some("ec.pub.pem"), None));
    let tenants = [
        json!(""),
        json!("a.b"),
        json!("acme corp"),
        json!("acme/../other"),
        json!("ácme"),
        json!("x".repeat(65)),
        json!(42),
        json!(["acme"]),
        json!({"id": "acme"}),
    ];
    for tenant in tenants {
        let token = sign(Algorithm::ES256, None, &with("tenant", tenant), &ec());
        check(&auth, &token, Err(AuthError::InvalidTenant));
    }
    let longest = "x".repeat(64);
    let principal = auth
        .verify(&sign(
            Algorithm::ES256,
            None,
            &with("tenant", json!(longest)),
            &ec(),
        ))
        .unwrap();
    assert_eq!(principal.tenant, longest);
}

#[test]
fn missing_scope_claim_is_forbidden() {
    // Documented choice (Authenticator::verify): no usable scope means an
    // authenticated caller allowed nothing, a 403 at the first `require`.
    let auth = authenticator(&keyed(false, Some("rsa.pub.pem"), None));
    let claims = [
        without("scope"),
        with("scope", Value::Null),
        with("scope", json!("")),
        with("scope", json!("events:delete superuser")),
        with("scope", json!("EVENTS:WRITE")),
    ];
    for claims in claims {
        let principal = auth
            .verify(&sign(Algorithm::RS256, None, &claims, &rsa()))
            .unwrap_or_else(|e| panic!("{claims}: {e}"));
        for scope in [Scope::EventsWrite, Scope::ReportsRead, Scope::Admin] {
            let error = principal.require(scope).unwrap_err();
            assert_eq!(error, AuthError::MissingScope(scope), "{claims}");
            assert_eq!(status(error), StatusCode::FORBIDDEN);
        }
    }
    // A scope claim that is not a string is a malformed token: 401.
    for scope in [json!(["events:write"]), json!(1)] {
        let token = sign(Algorithm::RS256, None, &with("scope", scope), &rsa());
        check(&auth, &token, refused(TokenError::InvalidClaim("scope")));
    }
    assert_eq!(
        status(AuthError::InvalidToken(TokenError::InvalidClaim("scope"))),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn hostile_token_shapes_are_refused() {
    let auth = authenticator(&keyed(true, Some("rsa.pub.pem"), Some("jwks.json")));
    let genuine = sign(Algorithm::RS256, None, &claims(), &rsa());
    let parts: Vec<&str> = genuine.split('.').collect();
    let payload = b64(claims().to_string());
    let header = |value: &str| format!("{}.{payload}.AAAA", b64(value));
    let cases = [
        (String::new(), TokenError::Malformed),
        (".".into(), TokenError::Malformed),
        ("..".into(), TokenError::Malformed),
        ("...".into(), TokenError::Malformed),
        ("a".into(), TokenError::Malformed),
        ("a.b".into(), TokenError::Malformed),
        ("not.a.jwt".into(), TokenError::Malformed),
        (format!("{}.{}", parts[0], parts[1]), TokenError::Malformed),
        (format!("{genuine}.{}", parts[2]), TokenError::Malformed),
        (
            format!("{}={}", parts[0], &genuine[parts[0].len()..]),
            TokenError::Malformed,
        ),
        (format!(" {genuine}"), TokenError::Malformed),
        ("é.é.é".into(), TokenError::Malformed),
        ("\0.\0.\0".into(), TokenError::Malformed),
        ("+/+/.+/+/.+/+/".into(), TokenError::Malformed),
        (header("hello"), TokenError::Malformed),
        (header("[]"), TokenError::Malformed),
        (header("\"RS256\""), TokenError::Malformed),
        (header("null"), TokenError::Malformed),
        (header("{}"), TokenError::Malformed),
        (header(r#"{"typ":"JWT"}"#), TokenError::Malformed),
        (header(r#"{"alg":256}"#), TokenError::Malformed),
        (header(r#"{"alg":null}"#), TokenError::Malformed),
        (header(r#"{"alg":["RS256"]}"#), TokenError::Malformed),
        (
            header(r#"{"alg":"RS256","alg":"none"}"#),
            TokenError::Malformed,
        ),
        (header(r#"{"alg":"RS256","kid":7}"#), TokenError::Malformed),
        (
            header(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
            TokenError::TooLong,
        ),
        (
            header(&format!("{}{}", "[".repeat(2_000), "]".repeat(2_000))),
            TokenError::Malformed,
        ),
        (
            format!("{}.!!!.{}", parts[0], parts[2]),
            TokenError::BadSignature,
        ),
        ("a".repeat(1 << 20), TokenError::TooLong),
        (
            format!("{}.{}.{}", parts[0], "A".repeat(MAX_TOKEN_BYTES), parts[2]),
            TokenError::TooLong,
        ),
    ];
    for (token, expected) in cases {
        check(&auth, &token, refused(expected));
    }
}

#[test]
fn signed_but_malformed_claims_are_refused() {
    // Correctly signed (a careless or compromised issuer), so parsing the
    // payload is reached: it must refuse, not panic.
    let auth = Authenticator::new(&dev());
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let payloads: [&[u8]; 6] = [
        b"not json",
        b"[]",
        b"42",
        b"null",
        b"\xff\xfe",
        br#"{"sub":"x","sub":"y"}"#,
    ];
    for payload in payloads {
        let token = sign_raw(&header, payload, Algorithm::HS256, &dev_secret());
        let result = auth.verify(&token);
        assert!(
            matches!(
                result,
                Err(AuthError::InvalidToken(
                    TokenError::Malformed | TokenError::MissingClaim(_)
                ))
            ),
            "{payload:?}: got {result:?}"
        );
    }
    let deep = format!("{}{}", "[".repeat(3_000), "]".repeat(3_000));
    let token = sign_raw(&header, deep, Algorithm::HS256, &dev_secret());
    assert!(auth.verify(&token).is_err());
}

// --- Key loading ---------------------------------------------------------------

#[test]
fn bad_key_configuration_fails_at_start_up_naming_the_file() {
    let cases: [(AuthConfig, &[&str]); 9] = [
        (
            keyed(false, Some("missing.pem"), None),
            &["auth.public_key_file", "missing.pem"],
        ),
        (
            keyed(false, Some("rsa.key.pem"), None),
            &["rsa.key.pem", "private key"],
        ),
        (
            keyed(false, Some("ec.key.pem"), None),
            &["ec.key.pem", "private key"],
        ),
        (
            keyed(false, Some("rsa-1024.pub.pem"), None),
            &["rsa-1024.pub.pem", "1024 bits"],
        ),
        (
            keyed(false, Some("ec-p384.pub.pem"), None),
            &["ec-p384.pub.pem", "P-256"],
        ),
        (
            keyed(false, Some("jwks.json"), None),
            &["jwks.json", "not a PEM file"],
        ),
        (
            keyed(false, None, Some("rsa.pub.pem")),
            &["auth.jwks_file", "rsa.pub.pem", "JWKS"],
        ),
        (
            keyed(false, None, Some("missing.json")),
            &["auth.jwks_file", "missing.json"],
        ),
        (keyed(false, None, None), &["no verification key"]),
    ];
    for (config, expected) in cases {
        let error = Authenticator::from_config(&config).unwrap_err().to_string();
        for part in expected {
            assert!(error.contains(part), "expected {part:?} in: {error}");
        }
    }

    let mut short = dev();
    short.hs256_secret = "too-short".to_owned().into();
    assert!(matches!(
        Authenticator::from_config(&short),
        Err(KeyError::WeakSecret)
    ));
    let mut leeway = dev();
    leeway.leeway_secs = MAX_LEEWAY_SECS + 1;
    assert!(matches!(
        Authenticator::from_config(&leeway),
        Err(KeyError::Leeway(_))
    ));
}

#[test]
fn pem_files_are_checked() {
    let two = format!("{RSA_PUBLIC}{EC_PUBLIC}");
    let certificate = RSA_PUBLIC.replace("PUBLIC KEY", "CERTIFICATE");
    let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    let cases = [
        (RSA_PUBLIC, Ok(Algorithm::RS256)),
        (EC_PUBLIC, Ok(Algorithm::ES256)),
        ("", Err("not a PEM file")),
        (two.as_str(), Err("more than one PEM block")),
        (certificate.as_str(), Err("expected a 'PUBLIC KEY'")),
        (garbage, Err("neither an RSA")),
    ];
    for (text, expected) in cases {
        let got = keys::pem_key(text).map(|k| k.alg);
        match expected {
            Ok(alg) => assert_eq!(got, Ok(alg), "{text}"),
            Err(part) => {
                let error = got.unwrap_err();
                assert!(error.contains(part), "expected {part:?} in: {error}");
            }
        }
    }
}

#[test]
fn jwks_files_are_checked() {
    let fixture: Value = serde_json::from_str(JWKS).unwrap();
    let rsa = &fixture["keys"][0];
    let ec = &fixture["keys"][1];
    let patched = |key: &Value, field: &str, value: Value| {
        let mut key = key.clone();
        if value.is_null() {
            key.as_object_mut().unwrap().remove(field);
        } else {
            key[field] = value;
        }
        key
    };
    let set = |keys: Vec<Value>| json!({ "keys": keys }).to_string();
    let short_n = b64([0xffu8; 128]);
    // Ok: the keys loaded, as "kid:alg" ("-" without a kid); Err: part of
    // the error.
    let cases: Vec<(String, Result<&str, &str>)> = vec![
        (JWKS.to_owned(), Ok("test-rsa:RS256 test-ec:ES256")),
        // alg inferred from kty, kid optional.
        (
            set(vec![
                patched(rsa, "alg", Value::Null),
                patched(ec, "kid", Value::Null),
            ]),
            Ok("test-rsa:RS256 -:ES256"),
        ),
        // Skipped: other algorithms, curves and uses; the rest still loads.
        (
            set(vec![
                patched(rsa, "alg", json!("PS256")),
                patched(ec, "crv", json!("P-384")),
                patched(rsa, "key_ops", json!(["encrypt"])),
                json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}),
                ec.clone(),
            ]),
            Ok("test-ec:ES256"),
        ),
        ("{}".into(), Err("not a valid JWKS document")),
        ("not json".into(), Err("not a valid JWKS document")),
        (set(vec![]), Err("no RS256 or ES256 signing key")),
        (
            set(vec![patched(rsa, "use", json!("enc"))]),
            Err("no RS256 or ES256 signing key"),
        ),
        (
            set(vec![patched(rsa, "d", json!("c2VjcmV0"))]),
            Err("private or symmetric key material ('d')"),
        ),
        (
            set(vec![json!({"kty": "oct", "k": "c2VjcmV0"})]),
            Err("('k')"),
        ),
        (
            set(vec![rsa.clone(), patched(ec, "kid", json!("test-rsa"))]),
            Err("the kid is used twice"),
        ),
        (
            set(vec![patched(rsa, "alg", json!("ES256"))]),
            Err("alg ES256 does not fit kty RSA"),
        ),
        (
            set(vec![patched(ec, "alg", json!("RS256"))]),
            Err("alg RS256 does not fit kty EC"),
        ),
        (
            set(vec![patched(
                &patched(ec, "alg", json!("ES256")),
                "crv",
                json!("P-384"),
            )]),
            Err("crv P-256"),
        ),
        (
            set(vec![patched(rsa, "n", json!(short_n))]),
            Err("1024 bits"),
        ),
        (
            set(vec![patched(rsa, "n", json!("not base64!"))]),
            Err("'n' is not base64url"),
        ),
        (set(vec![patched(rsa, "e", json!("AQ"))]), Err("exponent")),
        (
            set(vec![patched(rsa, "e", Value::Null)]),
            Err("needs 'n' and 'e'"),
        ),
        (
            set(vec![patched(ec, "x", json!(b64([1u8; 32])))]),
            Err("not an EC P-256 public key"),
        ),
        (set(vec![patched(ec, "y", json!("AAAA"))]), Err("32 bytes")),
    ];
    for (text, expected) in cases {
        let got = keys::jwks_keys(&text).map(|keys| {
            keys.iter()
                .map(|k| format!("{}:{:?}", k.kid.as_deref().unwrap_or("-"), k.alg))
                .collect::<Vec<_>>()
                .join(" ")
        });
        match expected {
            Ok(keys) => assert_eq!(got.as_deref(), Ok(keys), "{text}"),
            Err(part) => {
                let error = got.unwrap_err();
                assert!(
                    error.contains(part),
                    "expected {part:?} in: {error}\nfor {text}"
                );
            }
        }
    }
}

#[test]
fn key_material_never_prints() {
    let config = keyed(true, Some("rsa.pub.pem"), Some("jwks.json"));
    let auth = authenticator(&config);
    let printed = format!("{auth:?}");
    assert!(
        !printed.contains(config.hs256_secret.expose_secret()),
        "{printed}"
    );
    let fixture: Value = serde_json::from_str(JWKS).unwrap();
    let modulus = fixture["keys"][0]["n"].as_str().unwrap();
    assert!(!printed.contains(&modulus[..16]), "{printed}");
    assert!(
        printed.contains("test-rsa") && printed.contains("RS256"),
        "{printed}"
    );

    // A private key given as the public key: the error names it, not its bytes.
    let error = Authenticator::from_config(&keyed(false, Some("rsa.key.pem"), None))
        .unwrap_err()
        .to_string();
    let body_line = RSA_PRIVATE.lines().nth(1).unwrap();
    assert!(!error.contains(body_line), "{error}");
    let secret = "c2VjcmV0LXByaXZhdGUtZXhwb25lbnQ";
    let leaked = json!({"keys": [{"kty": "RSA", "n": modulus, "e": "AQAB", "d": secret}]});
    let error = keys::jwks_keys(&leaked.to_string()).unwrap_err();
    assert!(!error.contains(secret), "{error}");
}

// --- Remembered tokens -------------------------------------------------------

#[test]
fn a_remembered_token_still_expires() {
    let auth = authenticator(&dev());
    let token = sign(Algorithm::HS256, None, &claims(), &dev_secret());
    check(&auth, &token, Ok(()));
    assert_eq!(auth.verified.len(), 1, "a verified token is remembered");
    check(&auth, &token, Ok(()));
    let leeway = dev().leeway_secs;
    let exp = claims()["exp"].as_u64().unwrap();
    for (at, expected) in [
        (exp + leeway, Ok(())),
        (exp + leeway + 1, Err(TokenError::Expired)),
        (now() + 3600, Err(TokenError::Expired)),
    ] {
        let seen = auth.verified.get(&token, at, leeway).unwrap();
        assert_eq!(seen.map(|_| ()), expected, "at {at} (exp {exp})");
    }
    // verify asks the remembered window, not only whether the token is known.
    let expired = verified::Entry {
        principal: auth.verify(&token).unwrap(),
        exp: now() - 3600,
        nbf: None,
    };
    auth.verified.insert(&token, expired, now(), leeway);
    check(&auth, &token, refused(TokenError::Expired));
}

#[test]
fn a_remembered_token_is_not_valid_before_nbf() {
    let auth = authenticator(&dev());
    let token = sign(
        Algorithm::HS256,
        None,
        &with("nbf", json!(now())),
        &dev_secret(),
    );
    check(&auth, &token, Ok(()));
    let leeway = dev().leeway_secs;
    let early = auth.verified.get(&token, now() - leeway - 60, leeway);
    assert_eq!(
        early.unwrap().map(|_| ()),
        Err(TokenError::NotYetValid),
        "a clock that went back is checked too"
    );
}

#[test]
fn refused_tokens_are_not_remembered() {
    let auth = authenticator(&dev());
    let forged = sign(Algorithm::HS256, None, &claims(), &hs(&"x".repeat(32)));
    let expired = sign(
        Algorithm::HS256,
        None,
        &with("exp", json!(now() - 3600)),
        &dev_secret(),
    );
    let float_exp = sign(
        Algorithm::HS256,
        None,
        &with("exp", json!(now() as f64 + 300.5)),
        &dev_secret(),
    );
    for _ in 0..2 {
        check(&auth, &forged, refused(TokenError::BadSignature));
        check(&auth, &expired, refused(TokenError::Expired));
    }
    let _ = auth.verify(&float_exp);
    assert_eq!(auth.verified.len(), 0);
}

#[test]
fn remembered_tokens_are_bounded() {
    let auth = authenticator(&dev());
    for n in 0..=verified::CAPACITY {
        let token = sign(
            Algorithm::HS256,
            None,
            &with("sub", json!(format!("s{n}"))),
            &dev_secret(),
        );
        auth.verify(&token).unwrap();
    }
    assert!(auth.verified.len() <= verified::CAPACITY);
    assert!(!format!("{auth:?}").contains("eyJ"), "no token is shown");
}
