#!/bin/sh
# Download and verify models into a models folder, ready to be copied into an image layer.
#
#   fetch-models.sh MODELS_DIR NAME...        (names: ben2, florence2, nudenet, llama)
#
# Uses the project's own model store (src/ben2_worker/models: pinned revision, sha256 checked
# before anything is moved into place; `ben2-worker models download`), then:
#   * verifies every file again (`ben2-worker models verify`);
#   * makes the files readable by every user (the images run as a non-root user; the store
#     writes some files 0600);
#   * sets every mtime to MODELS_MTIME (whole seconds, default 2024-01-01T00:00:00Z): image
#     layers keep whole seconds, so the self-check's verified stamps still match after a push,
#     and the layer bytes do not depend on when the build ran;
#   * removes the store's bookkeeping (lock file, stamps, staging) so only model files remain.
#
# Environment: PYTHON (default python3; must import ben2_worker), HF_ENDPOINT (a Hub mirror),
# HF_TOKEN or the file HF_TOKEN_FILE (default /run/secrets/hf_token, a BuildKit secret),
# BEN2_FETCH_MANIFEST (another manifest TOML, for tests), MODELS_MTIME.
# Exit status: 0 all verified; 1 a download or check failed; 64 usage.
set -eu

usage() {
    echo "usage: fetch-models.sh MODELS_DIR NAME... (names: ben2 florence2 nudenet llama)" >&2
    exit 64
}
[ "$#" -ge 2 ] || usage
models_dir=$1
shift

python=${PYTHON:-python3}
mtime=${MODELS_MTIME:-1704067200}
case $mtime in
    '' | *[!0-9]*) echo "fetch-models: MODELS_MTIME must be whole seconds since 1970, got '$mtime'" >&2; exit 64 ;;
esac

token_file=${HF_TOKEN_FILE:-/run/secrets/hf_token}
if [ -z "${HF_TOKEN:-}" ] && [ -r "$token_file" ]; then
    HF_TOKEN=$(cat "$token_file")
    export HF_TOKEN
fi

models() {
    # ben2_worker.models.cli is the `ben2-worker models` typer app; run it without the rest of the CLI.
    if [ -n "${BEN2_FETCH_MANIFEST:-}" ]; then
        "$python" -c 'from ben2_worker.models.cli import models_app; models_app(prog_name="ben2-worker models")' "$@" --manifest "$BEN2_FETCH_MANIFEST"
    else
        "$python" -c 'from ben2_worker.models.cli import models_app; models_app(prog_name="ben2-worker models")' "$@"
    fi
}

mkdir -p "$models_dir"
for name in "$@"; do
    echo "fetch-models: $name -> $models_dir (HF_ENDPOINT=${HF_ENDPOINT:-https://huggingface.co})"
    if ! models download "$name" --models-dir "$models_dir" --no-progress; then
        echo "fetch-models: FAILED to download model '$name' into $models_dir (the error above names the file and the fix)." >&2
        echo "fetch-models: behind a proxy or mirror, pass --build-arg HF_ENDPOINT=https://<mirror>; for a gated repo, a BuildKit secret: --secret id=hf_token,env=HF_TOKEN." >&2
        exit 1
    fi
    if ! models verify "$name" --models-dir "$models_dir"; then
        echo "fetch-models: model '$name' did not verify after download." >&2
        exit 1
    fi
done

rm -rf "$models_dir/.downloads" "$models_dir/models.lock.json" "$models_dir/.verified.json"
chmod -R u+rwX,go+rX,go-w "$models_dir"
find "$models_dir" -exec touch -h -d "@$mtime" {} +
echo "fetch-models: done: $*"
