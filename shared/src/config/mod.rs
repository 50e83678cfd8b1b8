//! Configuration: built-in defaults, then an optional TOML file, then
//! environment variables. The order and every field are documented once, in
//! `defaults.toml`, which is embedded in each binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::Deserialize;

/// The embedded defaults, also the reference for every setting.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// The HS256 secret of the local stack and the tests. Public: never use it
/// where tokens matter.
pub const DEVELOPMENT_HS256_SECRET: &str = "tally-development-secret-change-me";

/// Environment variable naming the optional configuration file.
pub const FILE_VAR: &str = "TALLY_CONFIG";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub nats: NatsConfig,
    pub clickhouse: ClickHouseConfig,
    pub auth: AuthConfig,
    pub command: CommandConfig,
    pub query: QueryConfig,
    pub projector: ProjectorConfig,
    pub windows: WindowsConfig,
    pub rate_limit: RateLimitConfig,
    pub webhooks: WebhookConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    pub url: String,
    pub stream_replicas: usize,
    pub dedup_horizon_secs: u64,
    pub publish_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: SecretString,
    pub timeout_ms: u64,
    /// How inserts travel to ClickHouse (and answers back).
    pub compression: Compression,
}

/// The HTTP body compression between the services and ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain bodies: ClickHouse parses an insert while it arrives. The
    /// faster choice wherever the network is not the bottleneck.
    None,
    /// Inserts as LZ4-compressed blocks (answers too where the server's
    /// `enable_http_compression` is on): less on the wire, for a slow or
    /// metered link.
    Lz4,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub hs256_secret: SecretString,
    /// Accept HS256 tokens signed with `hs256_secret`; off in production.
    pub hs256_enabled: bool,
    pub issuer: String,
    pub audience: String,
    /// A PEM public key: RSA (RS256) or EC P-256 (ES256).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// A JWKS document of RS256/ES256 public keys, chosen by `kid`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_events: usize,
    pub catalogue_cache_entries: u64,
    pub request_timeout_ms: u64,
    pub max_future_skew_secs: u64,
    pub max_event_age_days: u64,
    /// Origins (`scheme://host[:port]`) whose pages may call the API from
    /// a browser (CORS); empty: none.
    pub cors_allowed_origins: Vec<String>,
    /// Request bytes the write endpoints hold at once (admission control);
    /// a request waits up to `admission_wait_ms` for room, then gets 503.
    pub max_bytes_in_flight: usize,
    pub admission_wait_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    pub listen: SocketAddr,
    pub request_timeout_ms: u64,
    /// Longest wait for the read models to reach a requested `min_seq`.
    pub min_seq_wait_ms: u64,
    /// Signs page cursors; the same on every query API replica.
    pub cursor_secret: SecretString,
    /// The hot tier: memory for kept answers, how long one is reused while
    /// the position stands, and how old one may be served (marked stale)
    /// while ClickHouse is unavailable.
    pub cache_max_bytes: u64,
    pub cache_fresh_ms: u64,
    pub cache_stale_ms: u64,
    /// Per tenant and per token, one unit per request.
    pub rate_limit: RateLimitConfig,
    /// The command API's URL as browsers reach it: the like demo page calls
    /// it (and the pages' Content-Security-Policy allows its origin).
    pub command_api_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorConfig {
    pub listen: SocketAddr,
    pub consumer: String,
    /// The consumer serves this one worker: one cumulative ack per batch.
    pub exclusive: bool,
    pub batch_size: usize,
    pub batch_bytes: usize,
    pub fetch_wait_ms: u64,
    /// How long after its first event a batch that is not full takes more.
    pub linger_ms: u64,
    pub max_attempts: i64,
    pub retry_delay_ms: u64,
    pub position_interval_ms: u64,
    /// Events per level-0 rollup range; 0 turns rolling off.
    pub rollup_range: u64,
    /// How often a worker looks for a range to roll.
    pub rollup_interval_ms: u64,
    /// Whether workers retire the rollup ranges that newer joins supersede
    /// (no ranking up to eight ranges behind the rollups' end reads them)
    /// and the attempts never recorded done, and delete their rows.
    pub rollup_retire: bool,
    /// How long a retired range's rows stay before they are deleted (a
    /// reader that chose it just before may still read them).
    pub rollup_retired_keep_ms: u64,
    /// While the projection is more than this many events behind the
    /// stream, workers leave rolling for later (0: never).
    pub rollup_defer_lag: u64,
    /// Events to move to the dead-letter stream on sight, as
    /// `<tenant>:<event_id>`.
    pub quarantine: Vec<String>,
}

/// Event-time windows (minute, hour and day buckets).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsConfig {
    pub grace_seconds: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub tenant_per_second: u32,
    pub tenant_burst: u32,
    pub token_per_second: u32,
    pub token_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// How far a generic webhook's `X-Tally-Timestamp` may be from now.
    pub timestamp_tolerance_secs: u64,
    /// Secrets per tenant (the tenant names the `tenant` query parameter).
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, WebhookSecrets>,
}

/// One tenant's webhook secrets; a platform without one is refused (401).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSecrets {
    /// Meta (Instagram, Facebook) app secret: `X-Hub-Signature-256`.
    pub meta_app_secret: Option<SecretString>,
    /// Token Meta echoes when verifying the callback URL (`hub.verify_token`).
    pub meta_verify_token: Option<SecretString>,
    /// Secret of the generic signed-JSON webhook: `X-Tally-Signature`.
    pub generic_secret: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
    /// OTLP/HTTP endpoint to export trace spans to (for example
    /// `http://collector:4318/v1/traces`); empty: no export.
    pub otlp_traces_endpoint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// The origin (`scheme://host[:port]`) of an `http` or `https` URL
/// without credentials, query or fragment; `None` for anything else.
pub fn origin_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        && (host.starts_with('[') == host.ends_with(']'))
        && (!host.contains(':') || host.starts_with('['));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"?#;,'\"\\@".contains(&b));
    (host_ok && port_ok && path_ok).then(|| &url[..url.len() - path.len()])
}

/// Whether `value` is exactly an origin, as browsers send it in `Origin`:
/// a lowercase host and no default port (`:80` for http, `:443` for
/// https), since a browser never sends either and such an entry would
/// match nothing.
pub fn is_origin(value: &str) -> bool {
    if origin_of(value) != Some(value) || value.bytes().any(|b| b.is_ascii_uppercase()) {
        return false;
    }
    let (scheme, authority) = value
        .split_once("://")
        .expect("origin_of checked the scheme");
    let port = match authority.rsplit_once(':') {
        Some((_, port)) if !port.contains(']') => port,
        _ => return true,
    };
    let default = if scheme == "https" { "443" } else { "80" };
    port != default && !port.starts_with('0')
}

impl Config {
    /// Loads the configuration from the defaults, the file named by
    /// `TALLY_CONFIG` (if set) and `TALLY_*` environment variables.
    pub fn load() -> Result<Config, ConfigError> {
        let file = std::env::var_os(FILE_VAR).map(PathBuf::from);
        let config: Config = Self::figment(file.as_deref())
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.check()?;
        Ok(config)
    }

    /// Refuses values that would make no sense or overflow.
    pub fn check(&self) -> Result<(), ConfigError> {
        let problems: Vec<String> = [
            (
                self.command.max_future_skew_secs > 7 * 86_400,
                "command.max_future_skew_secs is over 7 days",
            ),
            (
                self.command.max_event_age_days > 36_500,
                "command.max_event_age_days is over 100 years",
            ),
            (
                self.command.max_batch_events == 0,
                "command.max_batch_events is 0",
            ),
            (
                self.command.request_timeout_ms == 0,
                "command.request_timeout_ms is 0",
            ),
            (
                self.command.max_bytes_in_flight
                    < self
                        .command
                        .max_body_bytes
                        .max(self.command.max_batch_bytes),
                "command.max_bytes_in_flight is below the largest request body allowed",
            ),
            (
                self.command.admission_wait_ms >= self.command.request_timeout_ms,
                "command.admission_wait_ms is not below command.request_timeout_ms",
            ),
            (
                self.query.request_timeout_ms == 0,
                "query.request_timeout_ms is 0",
            ),
            (
                self.nats.publish_timeout_ms == 0,
                "nats.publish_timeout_ms is 0",
            ),
            (
                self.nats.dedup_horizon_secs == 0,
                "nats.dedup_horizon_secs is 0",
            ),
            (self.projector.batch_size == 0, "projector.batch_size is 0"),
            (
                self.projector.batch_bytes == 0,
                "projector.batch_bytes is 0",
            ),
            (
                self.projector.position_interval_ms == 0,
                "projector.position_interval_ms is 0",
            ),
            (
                self.projector.linger_ms > 10_000,
                "projector.linger_ms is over 10 s",
            ),
            (
                self.projector.rollup_interval_ms == 0,
                "projector.rollup_interval_ms is 0",
            ),
            (
                self.projector.rollup_retire
                    && self.projector.rollup_retired_keep_ms
                        < self.clickhouse.timeout_ms.saturating_mul(3),
                "projector.rollup_retired_keep_ms is under three clickhouse.timeout_ms: a \
                 ranking reads the ranges done, then their rows, and may still be reading a \
                 range that long after it is retired",
            ),
            (
                self.windows.grace_seconds > 7 * 86_400,
                "windows.grace_seconds is over 7 days",
            ),
        ]
        .into_iter()
        .filter_map(|(bad, what)| bad.then_some(what))
        .map(str::to_owned)
        .collect();
        let mut problems = problems;
        for origin in &self.command.cors_allowed_origins {
            if !is_origin(origin) {
                problems.push(format!(
                    "command.cors_allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path)"
                ));
            }
        }
        let url = &self.query.command_api_url;
        match origin_of(url) {
            None => problems.push(format!(
                "query.command_api_url: {url:?} is not an http(s) URL"
            )),
            // The pages resolve `/v1/...` against it, which drops any path.
            Some(origin) if url.trim_end_matches('/') != origin => problems.push(format!(
                "query.command_api_url: {url:?} has a path; give the command API's origin \
                 (scheme://host[:port]), its routes are at /v1/..."
            )),
            Some(_) => {}
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }

    /// The built-in defaults plus the development HS256 secret: what tests
    /// start from (the local stack sets the same in `local/tally.toml`).
    pub fn development() -> Config {
        let mut config = Config::defaults();
        config.auth.hs256_secret = DEVELOPMENT_HS256_SECRET.to_owned().into();
        config
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Config {
        Figment::from(Toml::string(DEFAULTS))
            .extract()
            .expect("the embedded defaults are a valid configuration")
    }

    fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(Env::prefixed("TALLY_").split("__").ignore(&["CONFIG"]))
    }
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large; not ours to shrink.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults_are_complete() {
        let config = Config::defaults();
        assert_eq!(config.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(config.command.max_body_bytes, 1 << 20);
        assert_eq!(config.log.format, LogFormat::Json);
        assert!(config.auth.hs256_enabled);
        assert_eq!(config.auth.public_key_file, None);
        assert_eq!(config.auth.jwks_file, None);
        assert_eq!(config.auth.leeway_secs, 30);
        assert_eq!(config.clickhouse.compression, Compression::None);
    }

    #[test]
    fn clickhouse_compression_is_none_or_lz4() {
        Jail::expect_with(|jail| {
            jail.set_env("TALLY_CLICKHOUSE__COMPRESSION", "lz4");
            let config = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(config.clickhouse.compression, Compression::Lz4);
            jail.set_env("TALLY_CLICKHOUSE__COMPRESSION", "zstd");
            let err = Config::load().unwrap_err().to_string();
            assert!(
                err.contains("zstd") && err.to_lowercase().contains("compression"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn auth_keys_come_from_the_file_or_the_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "tally.toml",
                "[auth]\nhs256_enabled = false\njwks_file = \"/etc/tally/jwks.json\"\n",
            )?;
            jail.set_env("TALLY_CONFIG", "tally.toml");
            jail.set_env("TALLY_AUTH__PUBLIC_KEY_FILE", "/etc/tally/jwt.pem");
            jail.set_env("TALLY_AUTH__LEEWAY_SECS", "5");
            let auth = Config::load().map_err(|e| e.to_string())?.auth;
            assert!(!auth.hs256_enabled);
            assert_eq!(auth.jwks_file, Some(PathBuf::from("/etc/tally/jwks.json")));
            assert_eq!(
                auth.public_key_file,
                Some(PathBuf::from("/etc/tally/jwt.pem"))
            );
            assert_eq!(auth.leeway_secs, 5);
            assert_eq!(auth.issuer, "tally");
            Ok(())
        });
    }

    #[test]
    fn file_then_environment_override_the_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "tally.toml",
                "[nats]\nurl = \"nats://file:1\"\nstream_replicas = 3\n[query]\nlisten = \"0.0.0.0:9\"\n",
            )?;
            jail.set_env("TALLY_CONFIG", "tally.toml");
            jail.set_env("TALLY_NATS__URL", "nats://env:2");
            let config = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(config.nats.url, "nats://env:2");
            assert_eq!(config.nats.stream_replicas, 3);
            assert_eq!(config.query.listen.port(), 9);
            assert_eq!(config.projector.consumer, "projector");
            Ok(())
        });
    }

    #[test]
    fn nonsense_values_are_rejected() {
        Jail::expect_with(|jail| {
            jail.set_env("TALLY_COMMAND__MAX_FUTURE_SKEW_SECS", "99999999999");
            jail.set_env("TALLY_PROJECTOR__BATCH_SIZE", "0");
            // A batch held back longer than any reader would wait.
            jail.set_env("TALLY_PROJECTOR__LINGER_MS", "60000");
            // Room for fewer bytes than the largest batch: never admitted.
            jail.set_env("TALLY_COMMAND__MAX_BYTES_IN_FLIGHT", "1000");
            // Waiting for room as long as the request may take: a 408, never the 503.
            jail.set_env("TALLY_COMMAND__ADMISSION_WAIT_MS", "30000");
            // Retired rollup rows deleted while a ranking may read them.
            jail.set_env("TALLY_PROJECTOR__ROLLUP_RETIRED_KEEP_MS", "29999");
            let err = Config::load().unwrap_err().to_string();
            assert!(
                err.contains("max_future_skew_secs")
                    && err.contains("batch_size")
                    && err.contains("linger_ms")
                    && err.contains("max_bytes_in_flight")
                    && err.contains("admission_wait_ms")
                    && err.contains("rollup_retired_keep_ms"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_settings_are_rejected() {
        Jail::expect_with(|jail| {
            jail.set_env("TALLY_NATS__URLS", "nats://typo:1");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("urls"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn origins() {
        fn check(url: &str, expected: Option<&str>) {
            assert_eq!(origin_of(url), expected, "{url}");
        }
        check("http://127.0.0.1:8470", Some("http://127.0.0.1:8470"));
        check("https://api.example.com/", Some("https://api.example.com"));
        check(
            "https://api.example.com/command",
            Some("https://api.example.com"),
        );
        check("http://[::1]:8470", Some("http://[::1]:8470"));
        check("http://localhost", Some("http://localhost"));
        check("ftp://example.com", None);
        check("http://", None);
        check("http://user@example.com", None);
        check("http://example.com:port", None);
        check("http://example.com:123456", None);
        check("http://example.com/a?b", None);
        check("http://example.com/#x", None);
        check("http://exa mple.com", None);
        check("http://example.com; script-src *", None);
        check("http://::1:80", None);
        fn origin(value: &str, expected: bool) {
            assert_eq!(is_origin(value), expected, "{value}");
        }
        origin("http://127.0.0.1:8471", true);
        origin("https://dash.example.com", true);
        origin("http://[::1]:8471", true);
        origin("http://example.com:8080", true);
        origin("https://example.com:80", true);
        origin("http://example.com:443", true);
        origin("http://127.0.0.1:8471/", false);
        origin("*", false);
        // Browsers send neither uppercase hosts nor default ports.
        origin("https://Dash.Example.com", false);
        origin("http://example.com:80", false);
        origin("https://example.com:443", false);
        origin("http://[::1]:80", false);
        origin("http://example.com:080", false);
    }

    #[test]
    fn browser_settings_are_checked() {
        let config = Config::defaults();
        assert!(config.command.cors_allowed_origins.is_empty());
        assert_eq!(config.query.command_api_url, "http://127.0.0.1:8470");
        Jail::expect_with(|jail| {
            jail.set_env(
                "TALLY_COMMAND__CORS_ALLOWED_ORIGINS",
                "[http://127.0.0.1:8471, https://dash.example.com]",
            );
            let config = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(
                config.command.cors_allowed_origins,
                ["http://127.0.0.1:8471", "https://dash.example.com"]
            );
            jail.set_env("TALLY_COMMAND__CORS_ALLOWED_ORIGINS", "[\"*\"]");
            jail.set_env("TALLY_QUERY__COMMAND_API_URL", "javascript:alert(1)");
            let err = Config::load().unwrap_err().to_string();
            assert!(
                err.contains("cors_allowed_origins") && err.contains("command_api_url"),
                "{err}"
            );
            jail.set_env("TALLY_COMMAND__CORS_ALLOWED_ORIGINS", "[]");
            for (url, ok) in [
                ("http://127.0.0.1:8470", true),
                ("https://api.example.com/", true),
                ("https://api.example.com/command", false),
                ("https://api.example.com/command/", false),
                ("http://127.0.0.1:8470//", true),
            ] {
                jail.set_env("TALLY_QUERY__COMMAND_API_URL", url);
                match Config::load() {
                    Ok(_) => assert!(ok, "{url} accepted"),
                    Err(e) => {
                        let err = e.to_string();
                        assert!(!ok && err.contains("has a path"), "{url}: {err}");
                    }
                }
            }
            Ok(())
        });
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config::development();
        let printed = format!("{config:?}");
        assert!(
            !printed.contains(config.auth.hs256_secret.expose_secret()),
            "{printed}"
        );
    }
}
