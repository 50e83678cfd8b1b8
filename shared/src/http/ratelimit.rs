//! Token-bucket rate limits per tenant and per token (`governor`'s GCRA),
//! shared by both APIs: the command API spends one unit per event (a batch
//! one per item), the query API one per request. Answers carry
//! `RateLimit-Policy` and `RateLimit` (IETF httpapi rate-limit headers);
//! refusals are 429 with `Retry-After`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponseParts, ResponseParts};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use metrics::counter;

use crate::config::RateLimitConfig;
use crate::http::ApiError;
use crate::metrics as names;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One limit: a keyed bucket and how to describe it.
struct Limit<K: Hash + Eq + Clone> {
    name: &'static str,
    per_second: u32,
    burst: u32,
    buckets: Keyed<K>,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(name: &'static str, per_second: u32, burst: u32) -> Limit<K> {
        let per_second = per_second.max(1);
        let burst = burst.max(1);
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap())
            .allow_burst(NonZeroU32::new(burst).unwrap());
        Limit {
            name,
            per_second,
            burst,
            buckets: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }

    /// Spends `units` from `key`'s bucket; `Ok(remaining)` or the refusal.
    fn spend(&self, key: &K, units: NonZeroU32) -> Result<u32, ApiError> {
        match self.buckets.check_key_n(key, units) {
            Ok(Ok(state)) => Ok(state.remaining_burst_capacity()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(self.refuse(wait))
            }
            // More units than the bucket ever holds: the batch must be split.
            Err(_) => Err(ApiError::Malformed(format!(
                "a request may spend at most {} units of the '{}' rate limit; send fewer events per batch",
                self.burst, self.name
            ))),
        }
    }

    fn refuse(&self, wait: Duration) -> ApiError {
        counter!(names::RATE_LIMITED, "limit" => self.name).increment(1);
        ApiError::RateLimited {
            limit: self.name,
            retry_after_secs: wait.as_secs_f64().ceil() as u64,
        }
    }

    /// `"tenant";q=1000;w=1;burst=2000`
    fn policy(&self) -> String {
        format!(
            "\"{}\";q={};w=1;burst={}",
            self.name, self.per_second, self.burst
        )
    }

    /// Seconds until a bucket with `remaining` units is full again.
    fn refill_secs(&self, remaining: u32) -> u64 {
        u64::from(self.burst.saturating_sub(remaining)).div_ceil(u64::from(self.per_second))
    }
}

/// An API's limits.
pub struct RateLimits {
    enabled: bool,
    tenant: Limit<String>,
    token: Limit<u64>,
    /// `RateLimit-Policy`, the same on every answer: made once.
    policy: HeaderValue,
}

/// Headers describing the limits after a request spent its units:
/// `RateLimit-Policy` and `RateLimit`.
#[derive(Clone)]
pub struct RateHeaders(Option<(HeaderValue, String)>);

impl RateLimits {
    /// `min_burst` is the largest number of units one request may need (the
    /// batch size limit): bursts are never smaller.
    pub fn new(config: &RateLimitConfig, min_burst: u32) -> RateLimits {
        let tenant = Limit::new(
            "tenant",
            config.tenant_per_second,
            config.tenant_burst.max(min_burst),
        );
        let token = Limit::new(
            "token",
            config.token_per_second,
            config.token_burst.max(min_burst),
        );
        let policy = HeaderValue::from_str(&format!("{}, {}", tenant.policy(), token.policy()))
            .expect("a policy is names and numbers");
        RateLimits {
            enabled: config.enabled,
            tenant,
            token,
            policy,
        }
    }

    /// Spends `units` of the tenant's and the token's buckets.
    pub fn spend(&self, tenant: &str, token: &str, units: usize) -> Result<RateHeaders, ApiError> {
        if !self.enabled {
            return Ok(RateHeaders(None));
        }
        let units = NonZeroU32::new(u32::try_from(units).unwrap_or(u32::MAX).max(1)).unwrap();
        // The token's bucket first: a token over its own limit must not drain
        // its tenant's bucket for the tenant's other tokens.
        let token_left = self.token.spend(&token_key(token), units)?;
        let tenant_left = self.tenant.spend(&tenant.to_owned(), units)?;
        // Report the tighter of the two.
        let state = if token_left < tenant_left {
            format!(
                "\"token\";r={token_left};t={}",
                self.token.refill_secs(token_left)
            )
        } else {
            format!(
                "\"tenant\";r={tenant_left};t={}",
                self.tenant.refill_secs(tenant_left)
            )
        };
        Ok(RateHeaders(Some((self.policy.clone(), state))))
    }

    /// Forgets buckets that are full again (bounded memory for many keys).
    pub fn forget_idle(&self) {
        self.tenant.buckets.retain_recent();
        self.token.buckets.retain_recent();
    }
}

/// Drops full buckets every minute until `shutdown`, so memory follows the
/// active tenants and tokens rather than every one ever seen.
pub async fn forget_idle_buckets(
    limits: &RateLimits,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => limits.forget_idle(),
        }
    }
}

/// The caller's bearer token (already authenticated), to key its bucket.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> &str {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map_or("", |(_, token)| token.trim())
}

/// Tokens are keyed by a hash: the limiter never holds a credential.
fn token_key(token: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

impl IntoResponseParts for RateHeaders {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        if let Some((policy, state)) = self.0 {
            let headers = res.headers_mut();
            if let Ok(state) = HeaderValue::from_str(&state) {
                headers.insert(HeaderName::from_static("ratelimit-policy"), policy);
                headers.insert(HeaderName::from_static("ratelimit"), state);
            }
        }
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(tenant: (u32, u32), token: (u32, u32)) -> RateLimits {
        RateLimits::new(
            &RateLimitConfig {
                enabled: true,
                tenant_per_second: tenant.0,
                tenant_burst: tenant.1,
                token_per_second: token.0,
                token_burst: token.1,
            },
            1,
        )
    }

    #[test]
    fn a_bucket_spends_down_then_refuses_with_a_wait() {
        let limits = limits((1, 5), (100, 100));
        let headers = limits.spend("acme", "tok", 3).unwrap().0.unwrap();
        assert_eq!(
            headers.0,
            "\"tenant\";q=1;w=1;burst=5, \"token\";q=100;w=1;burst=100"
        );
        assert_eq!(headers.1, "\"tenant\";r=2;t=3");
        limits.spend("acme", "tok", 2).unwrap();
        match limits.spend("acme", "tok", 1) {
            Err(ApiError::RateLimited {
                limit: "tenant",
                retry_after_secs,
            }) => assert!(retry_after_secs >= 1),
            other => panic!("expected a tenant 429, got {:?}", other.err()),
        }
        // Another tenant has its own bucket.
        assert!(limits.spend("globex", "tok", 5).is_ok());
    }

    #[test]
    fn a_token_over_its_limit_does_not_drain_its_tenant() {
        let limits = limits((1, 4), (1, 2));
        limits.spend("acme", "greedy", 2).unwrap();
        for _ in 0..5 {
            assert!(matches!(
                limits.spend("acme", "greedy", 1),
                Err(ApiError::RateLimited { limit: "token", .. })
            ));
        }
        assert!(
            limits.spend("acme", "polite", 2).is_ok(),
            "the tenant still has 2 units"
        );
    }

    #[test]
    fn the_token_limit_applies_across_tenants_of_one_token() {
        let limits = limits((100, 100), (1, 2));
        limits.spend("a", "tok", 2).unwrap();
        assert!(matches!(
            limits.spend("b", "tok", 1),
            Err(ApiError::RateLimited { limit: "token", .. })
        ));
        assert!(limits.spend("b", "other-token", 1).is_ok());
    }

    #[test]
    fn a_request_larger_than_the_bucket_is_refused_plainly() {
        let limits = limits((10, 10), (10, 10));
        assert!(matches!(
            limits.spend("a", "t", 11),
            Err(ApiError::Malformed(_))
        ));
    }

    #[test]
    fn disabled_limits_spend_nothing() {
        let mut config = RateLimitConfig {
            enabled: false,
            tenant_per_second: 1,
            tenant_burst: 1,
            token_per_second: 1,
            token_burst: 1,
        };
        let limits = RateLimits::new(&config, 1);
        for _ in 0..10 {
            assert!(limits.spend("a", "t", 1).unwrap().0.is_none());
        }
        config.enabled = true;
        assert!(
            RateLimits::new(&config, 1000).spend("a", "t", 1000).is_ok(),
            "bursts cover a full batch"
        );
    }
}
