#!/usr/bin/env bash
# The test command of README.md. Installs what is missing: the test extras, and, where apt is at hand and this
# is root, Debian's ffmpeg (vsr uses the system ffmpeg when there is one) and Chromium with its driver (the
# browser test of vsr serve). Runs every test with the ffmpeg vsr picks, then the tests of the media steps
# (probing, muxing, stream copy, rotation, ingest, resume) again with the ffmpeg bundled with imageio-ffmpeg.
# Each run's log starts with the binary and its version.
set -uo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[test]' || exit 1
if ! command -v ffmpeg >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends ffmpeg; } >/dev/null 2>&1 \
        || echo "tests/run.sh: Debian's ffmpeg could not be installed; testing with the bundled one"
fi
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    # the browser test of vsr serve (tests/test_serve_browser.py skips without it)
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >/dev/null 2>&1 \
        || echo "tests/run.sh: Chromium could not be installed; the browser test is skipped"
fi
status=0
python -m pytest -q || status=$?
if command -v ffmpeg >/dev/null; then
    VSR_FFMPEG=bundled python -m pytest -q tests/test_ffmpeg.py tests/test_video.py tests/test_orientation.py \
        tests/test_corpus.py tests/test_fuzz.py tests/test_upscale_video.py tests/test_resume.py \
        tests/test_ingest.py tests/test_mux.py tests/test_repair.py || status=$?
fi
exit $status
