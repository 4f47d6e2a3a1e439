# syntax=docker/dockerfile:1
# sinkserve: multi-stage image. The build stage runs the same scripts CI runs
# (scripts/setup.sh, scripts/build.sh) on a CUDA devel image; the runtime
# stage is the slim CUDA runtime image with only the binaries and the shared
# libraries they link, run as a non-root user.
#
# Two variants share every step but the base images and the CUDA switch:
#   CUDA (the default, for real deployments):
#   docker build -t sinkserve .
#   CPU (what scripts/container.sh builds with podman, on a Debian bookworm
#   base it makes locally with mmdebstrap; any bookworm image works):
#   docker build --build-arg BUILD_IMAGE=debian:bookworm \
#     --build-arg RUNTIME_IMAGE=debian:bookworm --build-arg SINKSERVE_CUDA=OFF \
#     -t sinkserve:cpu .
#
#   docker run --gpus all -p 50051:50051 -p 8080:8080 -v /path/to/models:/models:ro sinkserve
#   (gRPC on 50051; HTTP on 8080: the web chat page at /, the OpenAI API at /v1)
#   (without a GPU, drop --gpus: --backend auto falls back to the CPU backend)
#
# Ubuntu 24.04 ships the same gRPC 1.51 / protobuf 3.21 / Abseil 20220623 as
# the Debian bookworm dev boxes, so setup.sh's package list applies as is.
ARG CUDA_VERSION=12.6.3
ARG UBUNTU=ubuntu24.04
ARG BUILD_IMAGE=nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU}
ARG RUNTIME_IMAGE=nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}

FROM ${BUILD_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
# setup.sh first, so the package layer is cached across source edits.
COPY scripts/setup.sh scripts/setup.sh
RUN SETUP_TEST_TOOLS=0 bash scripts/setup.sh && rm -rf /var/lib/apt/lists/*
COPY . .
# No GPU at build time: name the architectures instead of probing (sm_80 A100,
# sm_90 H100/H200), and build for a generic x86-64 CPU, not the build host's.
# SINKSERVE_CUDA=OFF (the CPU variant) builds the CPU backend only.
ARG SINKSERVE_CUDA=ON
ARG CUDA_ARCHS="80;90"
ARG JOBS=""
RUN JOBS=${JOBS:-$(nproc)} bash scripts/build.sh "-DSINKSERVE_CUDA=${SINKSERVE_CUDA}" \
      "-DSINKSERVE_CUDA_ARCHS=${CUDA_ARCHS}" -DSINKSERVE_MARCH=x86-64-v3
# Collect the binaries and every shared library they need that the runtime
# image lacks (glibc, cudart and cuBLAS come from the runtime image, the
# CUDA driver from the host through the NVIDIA container toolkit). The CPU
# variant links no CUDA library, so the same filter fits both.
RUN mkdir -p /out/bin /out/lib \
 && cp build/sinkserve-server build/sinkserve-chat build/sinkserve-bench \
       build/sinkserve-generate build/sinkserve-tokenize /out/bin/ \
 && ldd /out/bin/* | awk '/=> \// {print $3}' | sort -u \
    | grep -v -E '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt)\.so' \
    | xargs -r -I{} cp -L {} /out/lib/

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=build /out/bin/ /opt/sinkserve/bin/
COPY --from=build /out/lib/ /opt/sinkserve/lib/
# The CUDA runtime image sets LD_LIBRARY_PATH, a plain Debian one does not: no
# trailing empty entry (the working directory) when it is unset.
ENV PATH=/opt/sinkserve/bin:$PATH \
    LD_LIBRARY_PATH=/opt/sinkserve/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# Fail the build, not the first start, if a library is missing.
RUN ! ldd /opt/sinkserve/bin/* | grep "not found" \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sinkserve \
 && mkdir -p /models
USER 10001
EXPOSE 50051 8080
VOLUME ["/models"]
# grpc.health.v1: SERVING once the model is loaded, NOT_SERVING while draining.
HEALTHCHECK --interval=10s --timeout=4s --start-period=60s --retries=3 \
  CMD ["sinkserve-chat", "--server", "127.0.0.1:50051", "--health", "--timeout", "3"]
# SIGTERM drains: running turns get --drain-timeout seconds; keep it below the
# orchestrator's stop grace period (docker stop: 10 s unless -t).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sinkserve-server"]
CMD ["--model", "/models/stories260K/stories260K.bin", "--tokenizer", "/models/stories260K/tok512.bin", \
     "--listen", "0.0.0.0:50051", "--http-listen", "0.0.0.0:8080", "--backend", "auto", "--drain-timeout", "8"]
