#!/usr/bin/env bash
# Downloads the Debian packages a GPU machine needs to build the CUDA backend
# and its tests with -DSINKSERVE_SERVER=OFF (Abseil, GoogleTest, PCRE2, with
# their runtime libraries) into DIR, for run_gpu_checks.sh's DEB_DIR. The GPU
# machine cannot reach a package mirror, so this runs here, and DIR travels
# with the working tree: keep it out of git (.git/info/exclude).
#   bench/cuda/fetch_debs.sh .gpu-debs
set -euo pipefail
dir=${1:?usage: fetch_debs.sh DIR}
mkdir -p "$dir"
cd "$dir"
packages=(libabsl-dev libabsl20220623 libgtest-dev libgmock-dev libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3)
apt-get download "${packages[@]}"
du -sh .
