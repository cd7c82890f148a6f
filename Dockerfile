# Build the release binary, then run it as a non-root user on a slim base.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY migrations ./migrations
# The demo's built-in rules are the example file (`include_str!`); tests/packaging.rs
# checks that this stage copies everything the crate reads while compiling.
COPY rules.toml ./
RUN cargo build --release --locked --bin runwarden

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/runwarden --create-home runwarden
COPY --from=build /src/target/release/runwarden /usr/local/bin/runwarden
COPY rules.toml /etc/runwarden/rules.toml
USER runwarden
WORKDIR /var/lib/runwarden
ENV RUNWARDEN_CONFIG=/etc/runwarden/rules.toml \
    RUNWARDEN__SERVER__LISTEN=0.0.0.0:8080 \
    RUNWARDEN__STORE__URL=sqlite:///var/lib/runwarden/runwarden.db
EXPOSE 8080
# No curl in the slim image: bash's /dev/tcp asks /healthz directly.
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["runwarden"]
CMD ["serve"]
