//! Webhook signatures: HMAC-SHA256 of the raw body, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `message` under
/// `secret`.
pub fn verify(secret: &[u8], message: &[&[u8]], header: &str) -> bool {
    let Some(hex_signature) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    for part in message {
        mac.update(part);
    }
    mac.verify_slice(&signature).is_ok()
}

/// `sha256=<hex>` for `message` under `secret` (for tests and clients).
pub fn sign(secret: &[u8], message: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    for part in message {
        mac.update(part);
    }
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let header = sign(b"s3cret", &[b"{\"a\":1}"]);
        assert!(verify(b"s3cret", &[b"{\"a\":1}"], &header));
        assert!(
            verify(b"s3cret", &[b"{\"a\"", b":1}"], &header),
            "parts are concatenated"
        );
        assert!(!verify(b"other", &[b"{\"a\":1}"], &header));
        assert!(!verify(b"s3cret", &[b"{\"a\":2}"], &header));
        for bad in ["", "sha256=", "sha1=abcd", "sha256=zz", &header[7..]] {
            assert!(!verify(b"s3cret", &[b"{\"a\":1}"], bad), "{bad:?}");
        }
        // A known vector (RFC 4231 test case 2).
        assert_eq!(
            sign(b"Jefe", &[b"what do ya want for nothing?"]),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
