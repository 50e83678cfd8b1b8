//! NATS plumbing: connecting, and applying the stream and consumer
//! definitions kept as files under `nats/` (embedded at build time, so the
//! files in the repository are the only definition).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::config::NatsConfig;

/// `nats/streams/events.json`: the event stream.
pub const EVENTS_STREAM_DEFINITION: &str = include_str!("../../nats/streams/events.json");
/// `nats/consumers/projector.json`: the projector workers' durable consumer.
pub const PROJECTOR_CONSUMER_DEFINITION: &str = include_str!("../../nats/consumers/projector.json");
/// `nats/consumers/catalogue.json`: the command API's catalogue follower
/// (it writes the `TALLY_CATALOGUE` stream).
pub const CATALOGUE_CONSUMER_DEFINITION: &str = include_str!("../../nats/consumers/catalogue.json");

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("applying the definition of {what}: {message}")]
    Apply { what: String, message: String },
    /// A configuration error no retry mends.
    #[error("consumer {durable}: {message}")]
    AckPolicy { durable: String, message: String },
}

/// Messages the client holds for one subscription before it drops more (a
/// "slow consumer"; async-nats's default, set here so readers can size
/// their pulls against it).
pub const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// Connects to NATS. The client reconnects on its own after a connection loss.
/// Connects to `nats.url`: one server, or a cluster's servers separated by
/// commas (the client also learns the cluster's other servers from the one
/// it reaches, and reconnects to another when that one goes).
pub async fn connect(config: &NatsConfig, name: &str) -> Result<async_nats::Client, NatsError> {
    let servers = server_addrs(&config.url).map_err(|source| NatsError::Connect {
        url: config.url.clone(),
        source: source.into(),
    })?;
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_millis(config.publish_timeout_ms)))
        .retry_on_initial_connect()
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .connect(servers.as_slice())
        .await
        .map_err(|source| NatsError::Connect {
            url: config.url.clone(),
            source,
        })
}

/// The servers of a comma-separated `nats.url`.
fn server_addrs(url: &str) -> std::io::Result<Vec<async_nats::ServerAddr>> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        })
        .collect()
}

/// A JetStream context whose requests (publish acks included) time out after
/// the configured publish timeout.
pub fn jetstream(client: async_nats::Client, config: &NatsConfig) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(config.publish_timeout_ms))
        .build(client)
}

/// The event stream's definition, with the configured replica count.
pub fn events_stream_config(config: &NatsConfig) -> stream::Config {
    let mut stream: stream::Config = serde_json::from_str(EVENTS_STREAM_DEFINITION)
        .expect("nats/streams/events.json is a valid stream definition");
    stream.num_replicas = config.stream_replicas;
    stream.duplicate_window = Duration::from_secs(config.dedup_horizon_secs);
    stream
}

/// The projector consumer's definition, under the configured durable name.
/// `exclusive`: the consumer serves one worker only, which acknowledges a
/// batch with one cumulative ack (`AckPolicy::All`) instead of one ack per
/// event (`projector.exclusive`).
///
/// It has no subject filter: the event stream holds `tally.events.>` only,
/// so a filter selects nothing less, and nats-server 2.9 matches every
/// message against a wildcard filter on delivery. On a stream of the
/// benchmark's 3 tenants that halved the rate a consumer is served at
/// (about 175,000 events/s filtered against 320,000 unfiltered).
pub fn projector_consumer_config(durable: &str, exclusive: bool) -> consumer::pull::Config {
    let mut consumer: consumer::pull::Config = serde_json::from_str(PROJECTOR_CONSUMER_DEFINITION)
        .expect("nats/consumers/projector.json is a valid consumer definition");
    consumer.durable_name = Some(durable.to_owned());
    if exclusive {
        consumer.ack_policy = consumer::AckPolicy::All;
        consumer.description = Some(
            "One projector worker (projector.exclusive): folds every event into the \
             ClickHouse read models and acknowledges each batch with one cumulative ack."
                .into(),
        );
    }
    consumer
}

/// Creates the event stream, or updates it to the definition: idempotent,
/// and safe when several services start at once.
pub async fn ensure_events_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<stream::Stream, NatsError> {
    ensure_stream(js, events_stream_config(config)).await
}

/// Creates `wanted`, or updates the stream to it: idempotent, and safe when
/// several services start at once.
async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Stream, NatsError> {
    let apply = |message: String| NatsError::Apply {
        what: format!("stream {}", wanted.name),
        message,
    };
    for _ in 0..3 {
        match js.get_stream(&wanted.name).await {
            Ok(mut existing) => {
                let current = existing
                    .info()
                    .await
                    .map_err(|e| apply(e.to_string()))?
                    .config
                    .clone();
                if differs(&current, &wanted) {
                    js.update_stream(&wanted)
                        .await
                        .map_err(|e| apply(e.to_string()))?;
                    tracing::info!(stream = %wanted.name, "updated stream to its definition");
                }
                return Ok(existing);
            }
            Err(e) if is_stream_not_found(&e.kind()) => {
                match js.create_stream(wanted.clone()).await {
                    Ok(created) => {
                        tracing::info!(stream = %wanted.name, "created stream");
                        return Ok(created);
                    }
                    // Another service created it between our two calls: look again.
                    Err(e) => tracing::debug!(error = %e, "creating the stream raced; retrying"),
                }
            }
            Err(e) => return Err(apply(e.to_string())),
        }
    }
    Err(apply(
        "the stream kept changing while it was being applied".into(),
    ))
}

fn is_stream_not_found(kind: &jetstream::context::GetStreamErrorKind) -> bool {
    matches!(
        kind,
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Whether the settings the definition controls differ from the server's.
fn differs(current: &stream::Config, wanted: &stream::Config) -> bool {
    current.subjects != wanted.subjects
        || current.description != wanted.description
        || current.num_replicas != wanted.num_replicas
        || current.max_age != wanted.max_age
        || current.max_message_size != wanted.max_message_size
        || current.duplicate_window != wanted.duplicate_window
        || current.deny_delete != wanted.deny_delete
        || current.deny_purge != wanted.deny_purge
        || current.max_messages_per_subject != wanted.max_messages_per_subject
}

/// Creates or updates the projector's durable pull consumer. A consumer's
/// ack policy cannot change: switching `projector.exclusive` for an existing
/// consumer is refused ([`NatsError::AckPolicy`]), with what to do instead.
///
/// An exclusive consumer is created anew, just after its ack floor, every
/// time a worker binds it: what it delivered to an earlier run of the worker
/// is still pending, written or not, and the new run's first cumulative ack
/// would acknowledge it. Started again, it delivers all of that to this run.
/// Binding is refused while another worker's pull request waits on it (an
/// exclusive consumer serves one worker; the caller retries). If the
/// consumer is missing (a first start, or a bind that failed between the
/// delete and the create), it starts after `floor_hint` (a position this
/// process saw, never above the true floor), or at the stream's beginning
/// when that is 0: slower, still exact, as rows are keyed by sequence.
pub async fn ensure_projector_consumer(
    stream: &stream::Stream,
    durable: &str,
    exclusive: bool,
    floor_hint: u64,
) -> Result<consumer::PullConsumer, NatsError> {
    let mut wanted = projector_consumer_config(durable, exclusive);
    let apply = |message: String| NatsError::Apply {
        what: format!("consumer {durable}"),
        message,
    };
    let existing = match stream.consumer_info(durable).await {
        Ok(info) => Some(info),
        Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => None,
        Err(e) => return Err(apply(e.to_string())),
    };
    let mut floor = floor_hint;
    if let Some(info) = existing {
        if info.config.ack_policy != wanted.ack_policy {
            return Err(NatsError::AckPolicy {
                durable: durable.to_owned(),
                message: format!(
                    "it exists with ack policy {:?}, and projector.exclusive = {exclusive} \
                     needs {:?}; an ack policy cannot change: stop the workers and give \
                     projector.consumer a new name (the new consumer folds the stream from \
                     its start; rows are keyed by stream sequence, so folding again changes \
                     nothing), or set projector.exclusive back",
                    info.config.ack_policy, wanted.ack_policy
                ),
            });
        }
        if !exclusive {
            return ensure_consumer(stream, wanted).await;
        }
        if info.num_waiting > 0 {
            return Err(apply(format!(
                "{} pull request(s) of another worker wait on this exclusive consumer",
                info.num_waiting
            )));
        }
        floor = floor.max(ack_floor(&info));
        stream
            .delete_consumer(durable)
            .await
            .map_err(|e| apply(e.to_string()))?;
    }
    if exclusive && floor > 0 {
        wanted.deliver_policy = consumer::DeliverPolicy::ByStartSequence {
            start_sequence: floor + 1,
        };
        tracing::info!(
            consumer = durable,
            from = floor + 1,
            "exclusive consumer started after its ack floor"
        );
    }
    ensure_consumer(stream, wanted).await
}

/// The stream sequence up to which a consumer has acknowledged everything.
/// nats-server (2.9) reports 0 for a consumer that has acknowledged nothing
/// yet, even one created to start after a sequence (an exclusive projector
/// consumer bound again): its floor is then the sequence before its start.
pub fn ack_floor(info: &consumer::Info) -> u64 {
    match info.config.deliver_policy {
        consumer::DeliverPolicy::ByStartSequence { start_sequence }
            if info.ack_floor.consumer_sequence == 0 =>
        {
            start_sequence.saturating_sub(1)
        }
        _ => info.ack_floor.stream_sequence,
    }
}

/// `nats/streams/dead_letters.json`: events that could not be projected.
pub const DEAD_LETTERS_STREAM_DEFINITION: &str =
    include_str!("../../nats/streams/dead_letters.json");

/// The dead-letter stream's definition, with the configured replica count.
pub fn dead_letters_stream_config(config: &NatsConfig) -> stream::Config {
    let mut stream: stream::Config = serde_json::from_str(DEAD_LETTERS_STREAM_DEFINITION)
        .expect("nats/streams/dead_letters.json is a valid stream definition");
    stream.num_replicas = config.stream_replicas;
    stream
}

/// Creates the dead-letter stream, or updates it to its definition.
pub async fn ensure_dead_letters_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<stream::Stream, NatsError> {
    ensure_stream(js, dead_letters_stream_config(config)).await
}

/// `nats/streams/catalogue.json`: known posts, one message per post.
pub const CATALOGUE_STREAM_DEFINITION: &str = include_str!("../../nats/streams/catalogue.json");

/// The catalogue stream's definition, with the configured replica count.
pub fn catalogue_stream_config(config: &NatsConfig) -> stream::Config {
    let mut stream: stream::Config = serde_json::from_str(CATALOGUE_STREAM_DEFINITION)
        .expect("nats/streams/catalogue.json is a valid stream definition");
    stream.num_replicas = config.stream_replicas;
    stream
}

/// Creates the catalogue stream, or updates it to its definition.
pub async fn ensure_catalogue_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<stream::Stream, NatsError> {
    ensure_stream(js, catalogue_stream_config(config)).await
}

/// Creates or updates the command API's catalogue consumer.
pub async fn ensure_catalogue_consumer(
    stream: &stream::Stream,
) -> Result<consumer::PullConsumer, NatsError> {
    let wanted: consumer::pull::Config = serde_json::from_str(CATALOGUE_CONSUMER_DEFINITION)
        .expect("nats/consumers/catalogue.json is a valid consumer definition");
    ensure_consumer(stream, wanted).await
}

async fn ensure_consumer(
    stream: &stream::Stream,
    wanted: consumer::pull::Config,
) -> Result<consumer::PullConsumer, NatsError> {
    let durable = wanted.durable_name.clone().unwrap_or_default();
    // create_consumer is create-or-update on the server (nats-server 2.9
    // included, filter changes too), and returns the existing consumer
    // when identical.
    stream
        .create_consumer(wanted)
        .await
        .map_err(|e| NatsError::Apply {
            what: format!("consumer {durable}"),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_definitions_parse_and_take_their_overrides() {
        let mut nats = Config::defaults().nats;
        nats.stream_replicas = 3;
        let stream = events_stream_config(&nats);
        assert_eq!(stream.name, "TALLY_EVENTS");
        assert_eq!(stream.num_replicas, 3);
        assert_eq!(stream.subjects, vec!["tally.events.>".to_owned()]);
        assert_eq!(stream.duplicate_window, Duration::from_secs(24 * 3600));
        assert_eq!(stream.storage, stream::StorageType::File);

        let consumer = projector_consumer_config("workers", false);
        assert_eq!(consumer.durable_name.as_deref(), Some("workers"));
        assert_eq!(consumer.ack_policy, consumer::AckPolicy::Explicit);
        assert_eq!(consumer.filter_subject, "", "the stream's every subject");
        let solo = projector_consumer_config("solo", true);
        assert_eq!(solo.durable_name.as_deref(), Some("solo"));
        assert_eq!(solo.ack_policy, consumer::AckPolicy::All);
        assert_eq!(solo.filter_subject, "");
        assert_eq!(solo.max_ack_pending, consumer.max_ack_pending);
    }
}
