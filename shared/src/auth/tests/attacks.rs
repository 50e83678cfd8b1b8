//! Attacks on verification: one test per attack, named after it.

use super::*;

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

/// Each accepted algorithm with a configuration that accepts it and its
/// signing key.
fn every_algorithm() -> [(Algorithm, AuthConfig, EncodingKey); 3] {
    [
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
    ]
}

#[test]
fn tampered_payload_is_refused() {
    for (alg, config, key) in every_algorithm() {
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
    for (alg, config, key) in every_algorithm() {
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
