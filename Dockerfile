# syntax=docker/dockerfile:1
# drbot: multi-stage build. The runtime image holds the binary, CA certificates and psql
# (exec steps call it); it runs as an unprivileged user.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache the registry and target dir between builds; copy the binary out of the cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p drbot \
 && install -m 0755 target/release/drbot /usr/local/bin/drbot

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/drbot --create-home \
        --shell /usr/sbin/nologin drbot
COPY --from=builder /usr/local/bin/drbot /usr/local/bin/drbot
USER drbot
# Relative paths (a sqlite:// store, exec steps' cwd) resolve here.
WORKDIR /var/lib/drbot
# So `docker compose exec drbot drbot cmd …` finds the config without --config.
ENV DRBOT_CONFIG=/etc/drbot/drbot.toml
EXPOSE 8080
ENTRYPOINT ["drbot"]
CMD ["serve", "--config", "/etc/drbot/drbot.toml"]
