# Builds the three Tally services (and tally-replay) into one small runtime image; pick the
# service with the container's command (tally-command, tally-projector,
# tally-query).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/tally-command target/release/tally-projector target/release/tally-query target/release/tally-replay /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 tally
COPY --from=build /out/ /usr/local/bin/
USER tally
ENV TALLY_LOG__FORMAT=json
CMD ["tally-command"]
