//! Remembered (already verified) tokens: expiry and bounds still hold.

use super::*;

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
