//! Loading keys: PEM and JWKS files, and what is refused at start-up.

use super::*;

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
