//! Verification keys: where they come from, and the one algorithm each is
//! pinned to.
//!
//! Keys are loaded and checked once, at start-up: a key that cannot verify
//! anything (a private key given as the public one, a weak RSA modulus, a
//! point off the P-256 curve) stops the service with an error naming the
//! file, instead of refusing every token later. Errors describe the problem,
//! never the key material.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;

use crate::config::AuthConfig;

/// Shortest HS256 secret accepted: 256 bits, the size of the hash
/// (RFC 7518, section 3.2). Shorter secrets can be brute-forced from any token.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Largest clock-skew allowance accepted for `exp` and `nbf`.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// RSA moduli accepted, in bits: below 2048 is weak; above 4096 the RSA
/// verifier refuses the key anyway, so it would reject every token.
const RSA_MODULUS_BITS: RangeInclusive<usize> = 2048..=4096;

/// JWK members that only private or symmetric keys have. A JWKS file holding
/// them is a leak waiting to happen, so it is refused.
const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why the configured keys cannot be used. Raised at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file cannot be read.
    #[error("auth.{field} {}: {source}", path.display())]
    Read {
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A key file holds something other than usable public keys.
    #[error("auth.{field} {}: {reason}", path.display())]
    Invalid {
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "auth.hs256_secret is unset or shorter than {MIN_HS256_SECRET_BYTES} bytes; \
         set a longer secret or auth.hs256_enabled = false"
    )]
    WeakSecret,
    #[error(
        "auth: no verification key; set auth.public_key_file or auth.jwks_file, \
         or auth.hs256_enabled = true"
    )]
    NoKeys,
    #[error("auth.leeway_secs is {0}; at most {MAX_LEEWAY_SECS} is accepted")]
    Leeway(u64),
}

/// Where a key was configured (for logs and `Debug`; never the key itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Hs256Secret,
    PublicKeyFile,
    JwksFile,
}

/// A verification key and the single algorithm it accepts.
pub(super) struct Key {
    pub(super) kid: Option<String>,
    pub(super) alg: Algorithm,
    pub(super) decoding: DecodingKey,
    pub(super) origin: Origin,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Every key `config` enables, checked.
pub(super) fn load(config: &AuthConfig) -> Result<Vec<Key>, KeyError> {
    if config.leeway_secs > MAX_LEEWAY_SECS {
        return Err(KeyError::Leeway(config.leeway_secs));
    }
    let mut keys = Vec::new();
    if config.hs256_enabled {
        let secret = config.hs256_secret.expose_secret();
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(KeyError::WeakSecret);
        }
        keys.push(Key {
            kid: None,
            alg: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            origin: Origin::Hs256Secret,
        });
    }
    if let Some(path) = &config.public_key_file {
        let text = read("public_key_file", path)?;
        keys.push(pem_key(&text).map_err(|reason| KeyError::Invalid {
            field: "public_key_file",
            path: path.clone(),
            reason,
        })?);
    }
    if let Some(path) = &config.jwks_file {
        let text = read("jwks_file", path)?;
        keys.extend(jwks_keys(&text).map_err(|reason| KeyError::Invalid {
            field: "jwks_file",
            path: path.clone(),
            reason,
        })?);
    }
    if keys.is_empty() {
        return Err(KeyError::NoKeys);
    }
    Ok(keys)
}

fn read(field: &'static str, path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        field,
        path: path.to_owned(),
        source,
    })
}

/// A PEM public key: RSA becomes RS256, EC P-256 becomes ES256.
pub(super) fn pem_key(text: &str) -> Result<Key, String> {
    let labels: Vec<&str> = text
        .lines()
        .filter_map(|line| {
            line.trim()
                .strip_prefix("-----BEGIN ")?
                .strip_suffix("-----")
        })
        .collect();
    match labels.as_slice() {
        [] => return Err("not a PEM file".into()),
        [label] if label.contains("PRIVATE") => {
            return Err("holds a private key; configure the public key only \
                        (openssl pkey -in <key> -pubout)"
                .into())
        }
        ["PUBLIC KEY" | "RSA PUBLIC KEY"] => {}
        [_] => return Err("expected a 'PUBLIC KEY' PEM block".into()),
        _ => {
            return Err(
                "holds more than one PEM block; use one public key per file, \
                        or a JWKS file for several keys"
                    .into(),
            )
        }
    }
    let bytes = text.as_bytes();
    let (alg, decoding) = if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        let Ok(Jwk {
            algorithm: AlgorithmParameters::RSA(rsa),
            ..
        }) = Jwk::from_decoding_key(&key, None)
        else {
            return Err("not a valid RSA public key".into());
        };
        check_rsa(&rsa.n, &rsa.e)?;
        (Algorithm::RS256, key)
    } else if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
        check_p256(&key)?;
        (Algorithm::ES256, key)
    } else {
        return Err("neither an RSA (RS256) nor an EC P-256 (ES256) public key".into());
    };
    Ok(Key {
        kid: None,
        alg,
        decoding,
        origin: Origin::PublicKeyFile,
    })
}

/// One member of a JWKS file, as written (jsonwebtoken's `Jwk` would accept
/// private members silently).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct RawJwkSet {
    keys: Vec<RawJwk>,
}

/// The signing keys of a JWKS document. Keys meant for something else (`use`
/// other than `sig`, `key_ops` without `verify`) or for algorithms Tally
/// does not accept are skipped; malformed, inconsistent or private keys are
/// errors.
pub(super) fn jwks_keys(text: &str) -> Result<Vec<Key>, String> {
    let set: RawJwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a valid JWKS document: {e}"))?;
    let mut keys: Vec<Key> = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let name = match &jwk.kid {
            Some(kid) => format!("keys[{index}] (kid '{kid}')"),
            None => format!("keys[{index}]"),
        };
        let Some(key) = jwk_key(jwk).map_err(|reason| format!("{name}: {reason}"))? else {
            tracing::info!(key = %name, "JWKS key skipped: not an RS256 or ES256 signing key");
            continue;
        };
        if let Some(kid) = &key.kid {
            if keys.iter().any(|k| k.kid.as_ref() == Some(kid)) {
                return Err(format!("{name}: the kid is used twice"));
            }
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("holds no RS256 or ES256 signing key".into());
    }
    Ok(keys)
}

/// `Ok(None)`: a key Tally has no use for.
fn jwk_key(jwk: &RawJwk) -> Result<Option<Key>, String> {
    if let Some(member) = PRIVATE_JWK_MEMBERS
        .iter()
        .find(|m| jwk.other.contains_key(**m))
    {
        return Err(format!(
            "holds private or symmetric key material ('{member}'); publish public keys only"
        ));
    }
    let for_signatures = jwk.usage.as_deref().is_none_or(|u| u == "sig")
        && jwk
            .key_ops
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|op| op == "verify"));
    if !for_signatures {
        return Ok(None);
    }
    let alg = match (jwk.kty.as_str(), jwk.alg.as_deref()) {
        ("RSA", None | Some("RS256")) => Algorithm::RS256,
        ("EC", Some("ES256")) => Algorithm::ES256,
        ("EC", None) if jwk.crv.as_deref() == Some("P-256") => Algorithm::ES256,
        (kty, Some(alg @ ("RS256" | "ES256"))) => {
            return Err(format!("alg {alg} does not fit kty {kty}"))
        }
        _ => return Ok(None),
    };
    let decoding = if alg == Algorithm::RS256 {
        let (Some(n), Some(e)) = (&jwk.n, &jwk.e) else {
            return Err("an RSA key needs 'n' and 'e'".into());
        };
        check_rsa(n, e)?;
        DecodingKey::from_rsa_components(n, e).map_err(|_| "'n' or 'e' is not base64url")?
    } else {
        if jwk.crv.as_deref() != Some("P-256") {
            return Err("ES256 needs crv P-256".into());
        }
        let (Some(x), Some(y)) = (&jwk.x, &jwk.y) else {
            return Err("an EC key needs 'x' and 'y'".into());
        };
        for coordinate in [x, y] {
            if base64url(coordinate, "'x' or 'y'")?.len() != 32 {
                return Err("'x' and 'y' must be 32 bytes for P-256".into());
            }
        }
        let key = DecodingKey::from_ec_components(x, y)
            .map_err(|_| "'x' or 'y' is not base64url".to_owned())?;
        check_p256(&key)?;
        key
    };
    Ok(Some(Key {
        kid: jwk.kid.clone(),
        alg,
        decoding,
        origin: Origin::JwksFile,
    }))
}

fn base64url(text: &str, what: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("{what} is not base64url"))
}

/// The modulus is 2048-4096 bits and the exponent one the verifier accepts.
fn check_rsa(n: &str, e: &str) -> Result<(), String> {
    let n = base64url(n, "'n'")?;
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    let bits = n
        .first()
        .map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
    if !RSA_MODULUS_BITS.contains(&bits) {
        return Err(format!(
            "the RSA modulus has {bits} bits; {}-{} are accepted",
            RSA_MODULUS_BITS.start(),
            RSA_MODULUS_BITS.end()
        ));
    }
    if n.last().is_some_and(|low| low % 2 == 0) {
        return Err("the RSA modulus is even".into());
    }
    let e = base64url(e, "'e'")?;
    let e = &e[e.iter().take_while(|b| **b == 0).count()..];
    let exponent = (e.len() <= 8).then(|| e.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)));
    match exponent {
        Some(e) if e >= 3 && e % 2 == 1 && e < 1 << 33 => Ok(()),
        _ => Err("the RSA public exponent is not an odd number from 3 to 2^33".into()),
    }
}

/// The key is a point on P-256: building an ES256 verifier parses it, and
/// fails for anything else (P-384 points, points off the curve).
fn check_p256(key: &DecodingKey) -> Result<(), String> {
    jsonwebtoken::crypto::verify("", b"", key, Algorithm::ES256)
        .map(|_| ())
        .map_err(|_| "not an EC P-256 public key (ES256 needs curve P-256)".into())
}
