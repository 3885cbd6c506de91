# The `mirror` container image. Build without a local Docker engine:
#
#   az acr build -r myacr -t tools/acr-mirror:0.1.0 .
#
# or, where an engine runs: docker build -t myacr.azurecr.io/tools/acr-mirror:0.1.0 .
#
# The build stage runs exactly the release build of the repository (`cargo build --release
# --locked`, the Rust version of the development machines, the committed Cargo.lock), and the
# runtime stage ships only that binary, CA certificates, the AKS component lists and a non-root
# user. tests/operations.rs checks these properties of this file; the image itself is not built
# in CI (no engine there).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole context (see .dockerignore: no target/, no .git), so that every target Cargo.toml
# names is present and the build is the same as in a checkout.
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 mirror \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mirror
COPY --from=build /src/target/release/mirror /usr/local/bin/mirror
# The AKS component lists. The binary has the same lists built in; these copies are what it reads
# (`./manifests-lists/aks` from the working directory below), so that newer lists can be mounted
# over /usr/share/acr-mirror/manifests-lists/aks without rebuilding the image.
COPY manifests-lists /usr/share/acr-mirror/manifests-lists
WORKDIR /usr/share/acr-mirror
USER 65532:65532
ENTRYPOINT ["mirror"]
CMD ["--help"]
