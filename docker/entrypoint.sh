#!/bin/sh
# Entry point of the native images.
#
#   (no arguments)       start the RunPod worker: python -m ben2_worker.handler
#   --rp_... flags       the same, with the runpod SDK's flags appended
#   any other command    run it (e.g. `ben2-worker selfcheck`, `bash`)
#
# Environment:
#   SERVE_API_LOCALLY=true   serve the SDK's local API (/run, /runsync, /status; Swagger at /)
#                            on RP_API_HOST:RP_API_PORT (default 0.0.0.0:8000), as worker-comfyui does
#   BEN2_WORKER_SELFCHECK_ON_START=1   run the self-check before the worker (costs a stat per
#                            model file thanks to the stamps recorded at build time)
#   Everything else (BEN2_WORKER_*, BUCKET_*, RUNPOD_*) is read by the worker itself.
set -eu

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec "$@"
fi

case ${SERVE_API_LOCALLY:-false} in
    true | TRUE | True | 1 | yes)
        set -- --rp_serve_api --rp_api_host "${RP_API_HOST:-0.0.0.0}" --rp_api_port "${RP_API_PORT:-8000}" "$@" ;;
    false | FALSE | False | 0 | no | '') ;;
    *) echo "entrypoint: SERVE_API_LOCALLY must be true or false, got '$SERVE_API_LOCALLY'" >&2; exit 64 ;;
esac

case ${BEN2_WORKER_SELFCHECK_ON_START:-0} in
    1 | true | yes)
        python -m ben2_worker.cli.selfcheck --pipelines "${BEN2_WORKER_PIPELINES:-simple}" || {
            echo "entrypoint: self-check failed (see above); not starting the worker" >&2
            exit 1
        } ;;
    *) ;;
esac

exec python -m ben2_worker.handler "$@"
