# The hostplane image: one binary for `hostplane serve` and `hostplane listener`, as the
# manifests in deploy/kubernetes run it.
#   docker build -t hostplane:latest .
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hostplane \
    && cp target/release/hostplane /usr/local/bin/hostplane

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/hostplane /usr/local/bin/hostplane
USER 65532:65532
ENTRYPOINT ["hostplane"]
CMD ["serve", "--listen", "0.0.0.0:1985"]
