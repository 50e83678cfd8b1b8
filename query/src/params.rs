//! Query parameters: read once, validated, turned into typed values or a
//! 400 that names the parameter. Pure (the clock is passed in).

use std::collections::HashMap;

use tally_shared::event::is_valid_id;
use tally_shared::http::ApiError;
use tally_shared::store::models::{Entity, Filters, Granularity, Metric};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Longest range any report covers.
pub const MAX_RANGE_SECONDS: u32 = 400 * 86_400;
/// Most buckets or windows one answer holds.
pub const MAX_POINTS: u32 = 10_000;
/// Default and largest page size of a list.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1_000;

/// The raw query string as name → value; a repeated name is refused.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut map = HashMap::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                return Err(bad(&format!(
                    "unknown parameter '{}'; this endpoint takes {}",
                    truncate(&name),
                    allowed.join(", ")
                )));
            }
            if map.insert(name.to_string(), value.to_string()).is_some() {
                return Err(bad(&format!("parameter '{name}' given twice")));
            }
        }
        Ok(Params(map))
    }

    /// Every parameter but `min_seq`, sorted: what identifies an answer.
    pub fn canonical(&self) -> String {
        let mut pairs: Vec<_> = self.0.iter().filter(|(k, _)| *k != "min_seq").collect();
        pairs.sort();
        // Encoded again, so that a value holding `&` or `=` cannot pass
        // for another parameter.
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An id-shaped parameter (the same rule as event ids).
    pub fn id(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.get(name)
            .map(|value| path_id(name, value).map(|()| value.to_owned()))
            .transpose()
    }

    /// `[from, to)` from `period` (`1h`, `24h`, `7d`, `30d`: ending now) or
    /// `from`/`to` (RFC 3339; `to` defaults to now), else `default` ending
    /// now.
    pub fn range(&self, now: u32, default: u32) -> Result<(u32, u32), ApiError> {
        let (from, to) = match (self.get("period"), self.get("from"), self.get("to")) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(bad("give either period or from/to, not both"))
            }
            (Some(period), None, None) => {
                let seconds = period_seconds(period).ok_or_else(|| {
                    bad("period must be one of 1h, 24h, 7d, 30d (or give from/to)")
                })?;
                (now.saturating_sub(seconds), now)
            }
            (None, from, to) => {
                let to = to.map(|t| timestamp("to", t)).transpose()?.unwrap_or(now);
                let from = match from {
                    Some(f) => timestamp("from", f)?,
                    None => to.saturating_sub(default),
                };
                (from, to)
            }
        };
        if from >= to {
            return Err(bad("from must be before to"));
        }
        if to - from > MAX_RANGE_SECONDS {
            return Err(bad("the range may span at most 400 days"));
        }
        Ok((from, to))
    }

    pub fn granularity(&self, default: Granularity) -> Result<Granularity, ApiError> {
        self.get("granularity")
            .map(|g| {
                Granularity::parse(g).ok_or_else(|| bad("granularity must be minute, hour or day"))
            })
            .transpose()
            .map(|g| g.unwrap_or(default))
    }

    pub fn metric(&self, default: Metric) -> Result<Metric, ApiError> {
        self.get("metric")
            .map(|m| {
                Metric::parse(m).ok_or_else(|| {
                    let names: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
                    bad(&format!("metric must be one of {}", names.join(", ")))
                })
            })
            .transpose()
            .map(|m| m.unwrap_or(default))
    }

    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(value) => value
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| bad(&format!("limit must be an integer from 1 to {MAX_LIMIT}"))),
        }
    }

    /// `min_seq`: the command API's `seq` of an event the answer must reflect.
    pub fn min_seq(&self) -> Result<Option<u64>, ApiError> {
        self.get("min_seq")
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad("min_seq must be a non-negative integer"))
            })
            .transpose()
    }

    pub fn filters(&self) -> Result<Filters, ApiError> {
        let platform = match self.get("platform") {
            None => None,
            Some(p) if tally_shared::event::Platform::parse(p).is_some() => Some(p.to_owned()),
            Some(_) => return Err(bad("platform is not a known platform")),
        };
        let content_type = match self.get("content_type") {
            None => None,
            Some(c) if is_valid_id(c) => Some(c.to_owned()),
            Some(_) => return Err(bad("content_type must be id-shaped")),
        };
        let tag = match self.get("tag") {
            None => None,
            Some(t) if !t.is_empty() && t.len() <= 64 && !t.chars().any(char::is_control) => {
                Some(t.to_owned())
            }
            Some(_) => {
                return Err(bad(
                    "tag must be 1-64 characters without control characters",
                ))
            }
        };
        Ok(Filters {
            platform,
            campaign_id: self.id("campaign_id")?,
            content_type,
            tag,
        })
    }

    /// `entity=post:{id}`, `influencer:{id}` or `campaign:{id}`.
    pub fn entity(&self) -> Result<Entity, ApiError> {
        let entity = self.get("entity").ok_or_else(|| {
            bad("entity is required: post:{id}, influencer:{id} or campaign:{id}")
        })?;
        let (kind, id) = entity
            .split_once(':')
            .ok_or_else(|| bad("entity must be post:{id}, influencer:{id} or campaign:{id}"))?;
        if !is_valid_id(id) {
            return Err(bad("the entity's id must be id-shaped"));
        }
        match kind {
            "post" => Ok(Entity::Post(id.to_owned())),
            "influencer" => Ok(Entity::Influencer(id.to_owned())),
            "campaign" => Ok(Entity::Campaign(id.to_owned())),
            _ => Err(bad(
                "entity must be post:{id}, influencer:{id} or campaign:{id}",
            )),
        }
    }

    /// A duration parameter such as `10s`, `1m`, `1h` or `1d`, in seconds.
    pub fn duration(&self, name: &str, default: u32) -> Result<u32, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => duration_seconds(value)
                .filter(|s| (1..=MAX_RANGE_SECONDS).contains(s))
                .ok_or_else(|| {
                    bad(&format!(
                        "{name} must be a duration such as 10s, 1m, 1h or 1d (at least 1s)"
                    ))
                }),
        }
    }
}

/// 400 unless `value` (the path's or parameter's `name`) is id-shaped.
pub fn path_id(name: &str, value: &str) -> Result<(), ApiError> {
    if is_valid_id(value) {
        Ok(())
    } else {
        Err(bad(&format!(
            "{name} must be 1-128 characters of A-Z, a-z, 0-9, '_', ':' or '-'"
        )))
    }
}

/// A bucketed answer over `range` may hold at most [`MAX_POINTS`] points.
pub fn check_points(range: (u32, u32), seconds: u32) -> Result<(), ApiError> {
    if (range.1 - range.0).div_ceil(seconds.max(1)) > MAX_POINTS {
        return Err(bad(&format!(
            "that range holds more than {MAX_POINTS} buckets; narrow it or use a coarser granularity"
        )));
    }
    Ok(())
}

fn period_seconds(period: &str) -> Option<u32> {
    match period {
        "1h" => Some(3_600),
        "24h" => Some(86_400),
        "7d" => Some(7 * 86_400),
        "30d" => Some(30 * 86_400),
        _ => None,
    }
}

fn duration_seconds(value: &str) -> Option<u32> {
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = value.split_at(split);
    if number.is_empty() || number.len() > 7 {
        return None;
    }
    let number: u32 = number.parse().ok()?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    number.checked_mul(unit)
}

fn timestamp(name: &str, value: &str) -> Result<u32, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .ok()
        .and_then(|t| u32::try_from(t.unix_timestamp()).ok())
        .ok_or_else(|| {
            bad(&format!(
                "{name} must be an RFC 3339 time such as 2026-11-22T10:00:00Z"
            ))
        })
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn bad(message: &str) -> ApiError {
    ApiError::Malformed(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u32 = 1_795_381_200;

    fn params(query: &str) -> Params {
        Params::parse(
            Some(query),
            &[
                "period",
                "from",
                "to",
                "granularity",
                "metric",
                "limit",
                "min_seq",
                "entity",
                "window",
                "step",
                "platform",
                "campaign_id",
                "content_type",
                "tag",
            ],
        )
        .unwrap()
    }

    fn error(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(ApiError::Malformed(message)) => message,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert!(error(Params::parse(Some("limt=5"), &["limit"]).map(|_| ())).contains("limt"));
        assert!(
            error(Params::parse(Some("limit=5&limit=6"), &["limit"]).map(|_| ())).contains("twice")
        );
        assert!(Params::parse(None, &[]).is_ok());
    }

    #[test]
    fn periods_and_ranges() {
        assert_eq!(
            params("period=1h").range(NOW, 60).unwrap(),
            (NOW - 3_600, NOW)
        );
        assert_eq!(
            params("period=30d").range(NOW, 60).unwrap(),
            (NOW - 30 * 86_400, NOW)
        );
        assert_eq!(params("").range(NOW, 86_400).unwrap(), (NOW - 86_400, NOW));
        assert_eq!(
            params("from=2026-11-22T10:00:00Z&to=2026-11-22T11:00:00Z")
                .range(NOW, 60)
                .unwrap(),
            (1_795_341_600, 1_795_345_200)
        );
        assert!(error(params("period=2w").range(NOW, 60)).contains("period"));
        assert!(
            error(params("period=1h&from=2026-11-22T10:00:00Z").range(NOW, 60))
                .contains("not both")
        );
        assert!(error(params("from=yesterday").range(NOW, 60)).contains("RFC 3339"));
        assert!(
            error(params("from=2026-11-22T11:00:00Z&to=2026-11-22T10:00:00Z").range(NOW, 60))
                .contains("before")
        );
        assert!(
            error(params("from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z").range(NOW, 60))
                .contains("400 days")
        );
        assert!(error(params("from=1960-01-01T00:00:00Z").range(NOW, 60)).contains("RFC 3339"));
    }

    #[test]
    fn names_limits_and_durations() {
        assert_eq!(
            params("granularity=day")
                .granularity(Granularity::Hour)
                .unwrap(),
            Granularity::Day
        );
        assert!(
            error(params("granularity=week").granularity(Granularity::Hour)).contains("minute")
        );
        assert_eq!(params("").metric(Metric::Likes).unwrap(), Metric::Likes);
        assert!(error(params("metric=likes;DROP").metric(Metric::Likes)).contains("views"));
        assert_eq!(params("").limit().unwrap(), DEFAULT_LIMIT);
        for bad_limit in ["0", "1001", "-1", "ten", "99999999999"] {
            assert!(error(params(&format!("limit={bad_limit}")).limit()).contains("limit"));
        }
        assert_eq!(params("window=1m").duration("window", 1).unwrap(), 60);
        assert_eq!(params("step=10s").duration("step", 1).unwrap(), 10);
        for bad_duration in ["0s", "10", "s", "1w", "-1m", "99999999999s", "1.5h"] {
            assert!(
                error(params(&format!("step={bad_duration}")).duration("step", 1))
                    .contains("duration")
            );
        }
        assert_eq!(params("min_seq=42").min_seq().unwrap(), Some(42));
        assert!(error(params("min_seq=-1").min_seq()).contains("min_seq"));
    }

    #[test]
    fn entities_and_filters() {
        assert_eq!(
            params("entity=post:p-1").entity().unwrap(),
            Entity::Post("p-1".into())
        );
        assert_eq!(
            params("entity=influencer:i1").entity().unwrap(),
            Entity::Influencer("i1".into())
        );
        assert!(error(params("entity=user:u1").entity()).contains("entity"));
        assert!(error(params("entity=post:").entity()).contains("id"));
        assert!(error(params("").entity()).contains("required"));
        let filters = params("platform=tiktok&campaign_id=c1&tag=summer")
            .filters()
            .unwrap();
        assert_eq!(filters.platform.as_deref(), Some("tiktok"));
        assert_eq!(filters.campaign_id.as_deref(), Some("c1"));
        assert!(error(params("platform=myspace").filters()).contains("platform"));
        assert!(error(params("campaign_id=a%20b").filters()).contains("campaign_id"));
    }

    #[test]
    fn canonical_parameters_cannot_be_forged_by_a_value() {
        let smuggled = params("tag=x%26to%3D2026-01-01T00%3A00%3A00Z").canonical();
        let real = params("tag=x&to=2026-01-01T00:00:00Z").canonical();
        assert_ne!(smuggled, real);
        assert_eq!(
            params("to=2026-01-01T00:00:00Z&tag=x&min_seq=5").canonical(),
            real,
            "sorted, min_seq left out"
        );
    }

    #[test]
    fn answers_are_bounded_in_points() {
        assert!(check_points((0, 86_400 * 6), 60).is_ok());
        assert!(check_points((0, 86_400 * 7 + 60), 60).is_err());
    }
}
