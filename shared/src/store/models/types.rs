//! The read models' value types: bucket sizes, rankable metrics, counters
//! and the shapes every read-model query answers with.

use std::collections::BTreeMap;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// Time bucket sizes of the engagement series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    pub fn seconds(self) -> u32 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3_600,
            Granularity::Day => 86_400,
        }
    }

    /// The ClickHouse function that truncates a `DateTime` to the bucket.
    pub(super) fn truncate(self) -> &'static str {
        match self {
            Granularity::Minute => "toStartOfMinute",
            Granularity::Hour => "toStartOfHour",
            // toStartOfDay keeps DateTime (toDate would change the type).
            Granularity::Day => "toStartOfDay",
        }
    }

    pub fn parse(name: &str) -> Option<Granularity> {
        match name {
            "minute" => Some(Granularity::Minute),
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            _ => None,
        }
    }
}

/// Metrics that influencers can be ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Likes,
    Shares,
    Comments,
    Views,
    Clicks,
    Conversions,
    /// likes + shares + comments (also accepted as `engagement`).
    Engagements,
    /// Follows minus unfollows: follower growth (also accepted as
    /// `follower_growth`).
    Follows,
    /// (likes + shares + comments) / views; a ratio, so it ranks but does
    /// not add up over windows.
    EngagementRate,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::Likes,
        Metric::Shares,
        Metric::Comments,
        Metric::Views,
        Metric::Clicks,
        Metric::Conversions,
        Metric::Engagements,
        Metric::Follows,
        Metric::EngagementRate,
    ];

    /// What the aggregate of [`Metric::sql`] counts in: 1 for counts; a
    /// ratio is computed in millionths so that every metric is an integer
    /// in ClickHouse.
    pub fn scale(self) -> i64 {
        match self {
            Metric::EngagementRate => 1_000_000,
            _ => 1,
        }
    }

    /// Whether values over adjacent windows add up (counts do, ratios not).
    pub fn is_additive(self) -> bool {
        self != Metric::EngagementRate
    }

    /// The aggregate, over enriched facts, that computes the metric.
    pub(super) fn sql(self) -> &'static str {
        match self {
            Metric::Likes => "toInt64(sum(likes))",
            Metric::Shares => "toInt64(sum(shares))",
            Metric::Comments => "toInt64(sum(comments))",
            Metric::Views => "toInt64(sum(views))",
            Metric::Clicks => "toInt64(sum(clicks))",
            Metric::Conversions => "toInt64(sum(conversions))",
            Metric::Engagements => "toInt64(sum(likes) + sum(shares) + sum(comments))",
            Metric::Follows => "toInt64(sum(follows))",
            Metric::EngagementRate => {
                "toInt64(if(sum(views) = 0, 0,
                    round((sum(likes) + sum(shares) + sum(comments)) * 1000000 / sum(views))))"
            }
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        match name {
            "engagement" => Some(Metric::Engagements),
            "follower_growth" => Some(Metric::Follows),
            _ => Metric::ALL.into_iter().find(|m| m.as_str() == name),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Likes => "likes",
            Metric::Shares => "shares",
            Metric::Comments => "comments",
            Metric::Views => "views",
            Metric::Clicks => "clicks",
            Metric::Conversions => "conversions",
            Metric::Engagements => "engagements",
            Metric::Follows => "follows",
            Metric::EngagementRate => "engagement_rate",
        }
    }
}

/// Counters summed over some facts. `likes` is net of unlikes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Row, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counters {
    pub likes: i64,
    pub shares: u64,
    pub comments: u64,
    pub views: u64,
    pub clicks: u64,
    pub conversions: u64,
    /// Sum of comment sentiment scores (-1000..=1000 each).
    pub sentiment_sum: i64,
    /// Facts counted (interactions and audience events).
    pub events: u64,
}

impl Counters {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Counters) {
        self.likes += other.likes;
        self.shares += other.shares;
        self.comments += other.comments;
        self.views += other.views;
        self.clicks += other.clicks;
        self.conversions += other.conversions;
        self.sentiment_sum += other.sentiment_sum;
        self.events += other.events;
    }

    /// (likes + shares + comments) / views; 0 without views.
    pub fn engagement_rate(&self) -> f64 {
        if self.views == 0 {
            return 0.0;
        }
        (self.likes.max(0) as f64 + self.shares as f64 + self.comments as f64) / self.views as f64
    }

    /// Mean comment sentiment from -1 to 1; `None` without comments.
    pub fn sentiment(&self) -> Option<f64> {
        (self.comments > 0).then(|| self.sentiment_sum as f64 / self.comments as f64 / 1000.0)
    }

    /// clicks / views; 0 without views.
    pub fn ctr(&self) -> f64 {
        ratio(self.clicks, self.views)
    }

    /// conversions / clicks; 0 without clicks.
    pub fn conversion_rate(&self) -> f64 {
        ratio(self.conversions, self.clicks)
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// A post's read model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostMetrics {
    pub post_id: String,
    #[serde(flatten)]
    pub counters: Counters,
    /// Conversion value per currency, in ten-thousandths.
    pub conversion_value_e4: BTreeMap<String, i64>,
    pub influencer_id: String,
    pub campaign_id: String,
    pub platform: String,
    pub content_type: String,
    pub tags: Vec<String>,
}

/// One bucket of an engagement series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Bucket start, seconds since the epoch.
    pub start: u32,
    #[serde(flatten)]
    pub counters: Counters,
    /// Facts in the bucket that were received after it closed.
    pub late: u64,
}

/// The followers of an influencer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Followers {
    pub influencer_id: String,
    /// Latest snapshot plus follows and unfollows after it.
    pub count: i64,
    /// Per day: (day start, followers at the end of the day).
    pub series: Vec<(u32, i64)>,
    /// (last − first) / first over the series; `None` when first is 0.
    pub growth_rate: Option<f64>,
}

/// A campaign's aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub campaign_id: String,
    pub name: String,
    pub currency: String,
    /// Budget in ten-thousandths of `currency`; 0 when unknown.
    pub budget_e4: i64,
    #[serde(flatten)]
    pub counters: Counters,
    /// Conversion value in the campaign's currency, ten-thousandths.
    pub value_e4: i64,
    pub ctr: f64,
    pub conversion_rate: f64,
    /// value / budget; `None` without a budget.
    pub roi: Option<f64>,
    pub by_influencer: Vec<Breakdown>,
    pub by_platform: Vec<Breakdown>,
}

/// A campaign's aggregates for one influencer or platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    pub key: String,
    #[serde(flatten)]
    pub counters: Counters,
    pub value_e4: i64,
}

/// One line of a ranking.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct Ranked {
    pub influencer_id: String,
    pub value: i64,
}

/// An event received after its bucket closed.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LateEvent {
    pub seq: u64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub post_id: String,
    pub occurred_at: u32,
    pub received_at: u32,
    pub bucket_end: u32,
    pub lateness_s: u32,
}

/// A bucket whose engagement stands out against the key's own baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Spike {
    pub influencer_id: String,
    pub start: u32,
    pub value: i64,
    pub baseline_mean: f64,
    pub baseline_stddev: f64,
}

/// One user acting on one post many times within a minute.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Burst {
    pub user_id: String,
    pub post_id: String,
    pub minute: u32,
    pub events: u64,
}

/// Where a read model stands.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct Position {
    pub model: String,
    pub position: u64,
    pub stream_last: u64,
    pub watermark: u32,
    pub updated_ms: u64,
}
