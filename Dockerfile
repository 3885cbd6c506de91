# The `mirror` container image: one static, stripped binary on a distroless base. Build it
# without a local Docker engine:
#
#   az acr build -r myacr -t tools/acr-mirror:0.1.0 .
#
# or where an engine runs: docker build -t myacr.azurecr.io/tools/acr-mirror:0.1.0 .
# `--target binary --output dist` gives only the binary and its debug symbols: the release
# workflow (.github/workflows/release.yml) publishes those, so the downloadable binaries and the
# image's are one build. tests/operations.rs checks what this file promises; no engine runs in
# CI, so the image itself is not built there.

# The release build of a checkout: `cargo build --release --locked` with the committed Cargo.lock.
# On Alpine the Rust host target is `<arch>-unknown-linux-musl`, whose binaries are static: the
# same file runs on any Linux of its architecture, needs no libc in the image, and is what the
# release workflow publishes.
FROM rust:1.95-alpine AS build
# The image's SBOM also lists what this stage built from (Cargo.lock's crates), not only what the
# final image holds: a static binary carries no package metadata a scanner could read.
ARG BUILDKIT_SBOM_SCAN_STAGE=true
# The C parts of the build (aws-lc, rustls's cryptography) need the libc and Linux headers
# (<linux/random.h>); objcopy is in binutils.
RUN apk add --no-cache musl-dev linux-headers binutils
WORKDIR /src
# The whole context (see .dockerignore: no target/, no .git), so that every target Cargo.toml
# names is present and the build is the same as in a checkout.
COPY . .
# The profile keeps line tables (readable backtraces); they are split off into mirror.debug (a
# separate release artifact, linked by name from the binary) and the shipped binary is stripped.
RUN cargo build --release --locked \
 && mkdir /out \
 && objcopy --only-keep-debug target/release/mirror /out/mirror.debug \
 && objcopy --strip-all --add-gnu-debuglink=/out/mirror.debug target/release/mirror /out/mirror

FROM scratch AS binary
COPY --from=build /out/ /

# distroless static: CA certificates (/etc/ssl/certs/ca-certificates.crt, which rustls reads through
# the platform verifier for every https connection), tzdata, /etc/passwd with the nonroot user
# 65532; no shell, no package manager, no libc.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mirror /usr/local/bin/mirror
# The AKS component lists. The binary has the same lists built in; these copies are what it reads
# (`./manifests-lists/aks` from the working directory below), so that newer lists can be mounted
# over /usr/share/acr-mirror/manifests-lists/aks without rebuilding the image.
COPY manifests-lists /usr/share/acr-mirror/manifests-lists
WORKDIR /usr/share/acr-mirror
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mirror"]
CMD ["--help"]
