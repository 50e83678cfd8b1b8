//! Opaque page cursors. A cursor pins the projection position the first
//! page was read at (facts are keyed by stream sequence, so `seq <=
//! position` is the read model exactly as it stood then), the tenant, and
//! the query it belongs to; it is signed so that a tampered cursor, or one
//! used with another query or tenant, is refused with 400.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tally_shared::http::ApiError;

/// Where the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Stream position the listing is pinned to.
    #[serde(rename = "p")]
    pub position: u64,
    /// Lines already returned (rankings), or the last key returned (lists
    /// ordered by a key).
    #[serde(rename = "o")]
    pub after: u64,
    /// The `[from, to)` the listing covers: a relative period such as `24h`
    /// is fixed when the first page is read.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(u32, u32)>,
}

#[derive(Serialize, Deserialize)]
struct Signed {
    #[serde(rename = "q")]
    query: String,
    #[serde(flatten)]
    page: Page,
}

/// Signs and checks cursors with the configured key.
#[derive(Clone)]
pub struct Cursors {
    key: Vec<u8>,
}

impl Cursors {
    pub fn new(secret: &str) -> Cursors {
        Cursors {
            key: secret.as_bytes().to_vec(),
        }
    }

    /// A cursor for `page` of the query `scope` (tenant, route and every
    /// parameter but the cursor itself).
    pub fn issue(&self, scope: &str, page: Page) -> String {
        let body = serde_json::to_vec(&Signed {
            query: digest(scope),
            page,
        })
        .expect("a cursor serialises");
        let mut token = URL_SAFE_NO_PAD.encode(&body);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(self.mac(&body)));
        token
    }

    /// The page a cursor points at, if it is genuine and belongs to `scope`.
    pub fn check(&self, scope: &str, cursor: &str) -> Result<Page, ApiError> {
        let invalid = || ApiError::Malformed("invalid cursor".into());
        let (body, tag) = cursor.split_once('.').ok_or_else(invalid)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&body);
        mac.verify_slice(&tag).map_err(|_| invalid())?;
        let signed: Signed = serde_json::from_slice(&body).map_err(|_| invalid())?;
        if signed.query != digest(scope) {
            return Err(ApiError::Malformed(
                "this cursor belongs to another query: repeat the query's parameters unchanged"
                    .into(),
            ));
        }
        Ok(signed.page)
    }

    fn mac(&self, body: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

fn digest(scope: &str) -> String {
    hex::encode(&Sha256::digest(scope.as_bytes())[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: Page = Page {
        position: 1234,
        after: 50,
        range: Some((100, 200)),
    };

    #[test]
    fn a_cursor_round_trips_for_its_own_query() {
        let cursors = Cursors::new("secret");
        let cursor = cursors.issue("acme /rankings metric=likes", PAGE);
        assert_eq!(
            cursors
                .check("acme /rankings metric=likes", &cursor)
                .unwrap(),
            PAGE
        );
    }

    #[test]
    fn tampered_foreign_and_garbage_cursors_are_refused() {
        let cursors = Cursors::new("secret");
        let cursor = cursors.issue("acme q", PAGE);
        // Another tenant or query.
        assert!(cursors.check("globex q", &cursor).is_err());
        assert!(cursors.check("acme q2", &cursor).is_err());
        // Another key.
        assert!(Cursors::new("other").check("acme q", &cursor).is_err());
        // A changed body with the old tag.
        let (_, tag) = cursor.split_once('.').unwrap();
        let forged = serde_json::to_vec(&Signed {
            query: digest("acme q"),
            page: Page {
                position: 9_999_999,
                after: 0,
                range: None,
            },
        })
        .unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(forged));
        assert!(cursors.check("acme q", &forged).is_err());
        for garbage in ["", ".", "abc", "abc.def", "%%%.%%%", &"A".repeat(5000)] {
            assert!(cursors.check("acme q", garbage).is_err(), "{garbage}");
        }
    }
}
