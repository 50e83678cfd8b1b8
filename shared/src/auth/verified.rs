//! Tokens whose signature and claims were verified lately, so that a client
//! sending the same token with every request pays for the cryptography and
//! the claim parsing once (HS256 alone was a third of an event's CPU).
//!
//! Invariants:
//! - only a token that passed [`super::Authenticator::verify`] in full is
//!   kept, keyed by its exact text: a hit is the same bytes, already
//!   verified against keys that never change while the process runs;
//! - `exp` and `nbf` are checked on every hit, as jsonwebtoken checks them
//!   (same leeway), so a cached token expires exactly when it would have;
//! - refusals are never kept; a token whose `exp` or `nbf` is not a plain
//!   integer is not kept either (it is verified every time);
//! - bounded: at most [`CAPACITY`] tokens; `Debug` never shows one.

use std::collections::HashMap;
use std::sync::RwLock;

use super::{Principal, TokenError};

/// Most tokens kept. Callers reuse a few tokens each; more distinct valid
/// tokens than this only means verifying some of them again.
pub(super) const CAPACITY: usize = 4096;

/// A verified token's caller and validity window.
#[derive(Clone)]
pub(super) struct Entry {
    pub(super) principal: Principal,
    pub(super) exp: u64,
    pub(super) nbf: Option<u64>,
}

impl Entry {
    /// jsonwebtoken's checks, as of `now` with `leeway` seconds of skew.
    fn check(&self, now: u64, leeway: u64) -> Result<(), TokenError> {
        if self.exp < now.saturating_sub(leeway) {
            return Err(TokenError::Expired);
        }
        if self.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }
}

#[derive(Default)]
pub(super) struct Verified {
    entries: RwLock<HashMap<Box<str>, Entry>>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verified { .. }")
    }
}

impl Verified {
    /// The caller of `token` if it was verified before: `Some(Ok)` while it
    /// is within its validity window, `Some(Err)` once it is not.
    pub(super) fn get(
        &self,
        token: &str,
        now: u64,
        leeway: u64,
    ) -> Option<Result<Principal, TokenError>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(token)?;
        Some(entry.check(now, leeway).map(|()| entry.principal.clone()))
    }

    /// Keeps a verified `token`. When full, tokens expired as of `now` go
    /// first, and if none did, all of them.
    pub(super) fn insert(&self, token: &str, entry: Entry, now: u64, leeway: u64) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, kept| kept.check(now, leeway).is_ok());
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(token.into(), entry);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.read().unwrap().len()
    }
}
