#!/bin/bash
# Keep $MODEL_ROOT/<model>/<version>/ in line with the complete versions in S3.
#
#   model-sync.sh --once    one pass over every model in $MODELS_FILE; exits non-zero, naming
#                           the models, if any of them could not be synced (init container)
#   model-sync.sh           a pass every $SYNC_INTERVAL_SECONDS, logging failed passes (sidecar)
#
# A version is complete when s3://$MODEL_BUCKET/$MODEL_PREFIX/<model>/_complete/<v>.sha256
# exists; it is downloaded to a staging folder, checked against that manifest and only
# then renamed into place (same filesystem: atomic), so TF Serving never sees a partial
# version; a download cut short leaves only staging files, which the next try replaces.
# Versions the config no longer asks for are removed, which TF Serving answers by
# unloading them. A model whose listing, download or check fails keeps what it has.
#
# A version deleted from S3 while it is served stays served, never swapped for an older
# one: under `latest N` the wanted versions are the newest N of those complete in S3 and
# those already on disk, so it is retired only once N newer complete versions are live;
# under `specific` a listed version on disk stays while the config lists it. To withdraw a
# bad version, publish a newer one or change the config (pods made after the deletion
# cannot fetch it and get the newest complete version in S3).
#
# The sync image's shell is Amazon Linux 2's bash 4.2 (aws/aws-cli docker/Dockerfile), which
# has no `inherit_errexit` (bash >= 4.4): `set -e` does not reach inside `$(...)`, and is
# ignored in functions called from `if`, `&&` or `||`. So every command whose failure
# matters is checked where it runs, and each model is synced by its own bash process.
set -euo pipefail
: "${MODEL_BUCKET:?}" "${MODEL_PREFIX:?}" "${MODEL_ROOT:?}" "${MODELS_FILE:?}"
INTERVAL="${SYNC_INTERVAL_SECONDS:-30}"
STAGING="$MODEL_ROOT/.staging"
COMPLETE="__COMPLETE_DIR__"

log() { echo "model-sync: $*" >&2; }
# The AWS CLI's error output (several lines, a traceback-like "An error occurred (Code)...")
# is kept in a file and logged folded into our one line about what failed, so each failure
# is one line with its cause.
AWS_ERRORS="$STAGING/aws-errors.$$"
log_failure() {  # what failed: logged with the cause the CLI gave
  local why
  why="$(tr -s '\n\t' '  ' < "$AWS_ERRORS" | sed 's/^ *//; s/ *$//')" || why="(no error output)"
  log "$*: $why"
}

complete_versions() {  # model: its complete versions in S3, ascending, one a line
  local keys
  if ! keys="$(aws s3api list-objects-v2 --bucket "$MODEL_BUCKET" \
      --prefix "$MODEL_PREFIX/$1/$COMPLETE/" --query 'Contents[].Key' --output text 2>"$AWS_ERRORS")"; then
    log_failure "model $1: cannot list s3://$MODEL_BUCKET/$MODEL_PREFIX/$1/$COMPLETE/"
    return 1
  fi
  # An empty listing prints "None"; it matches no version.
  printf '%s\n' "$keys" | tr '\t' '\n' | sed -n 's#.*/\([1-9][0-9]*\)\.sha256$#\1#p' | sort -n
}

local_versions() {  # model: the versions on disk, ascending, one a line
  local dir v
  for dir in "$MODEL_ROOT/$1"/*/; do
    v="$(basename "$dir")"
    if [[ "$v" =~ ^[1-9][0-9]*$ ]]; then echo "$v"; fi
  done | sort -n
}

wanted_versions() {  # model policy arg
  local available held wanted v
  # shellcheck disable=SC2310  # inside $(...) set -e is off anyway: failures are returned
  available="$(complete_versions "$1")" || return 1
  held="$(local_versions "$1")"
  if [ "$2" = latest ]; then
    wanted="$(printf '%s\n' "$available" "$held" | sed '/^$/d' | sort -nu | tail -n "$3")"
  else
    wanted=""
    for v in ${3//,/ }; do
      if printf '%s\n' "$available" "$held" | grep -qx "$v"; then wanted="$wanted $v"
      else log "model $1: version $v is not complete in S3; skipped"; fi
    done
  fi
  for v in $wanted; do
    echo "$v"
    if ! printf '%s\n' "$available" | grep -qx "$v"; then
      log "model $1: version $v is gone from S3; the copy on disk stays served"
    fi
  done
}

fetch() {  # model version
  local dest="$MODEL_ROOT/$1/$2" tmp="$STAGING/$1-$2" sums="$STAGING/$1-$2.sha256"
  local source="s3://$MODEL_BUCKET/$MODEL_PREFIX/$1"
  [ -d "$dest" ] && return 0
  rm -rf "$tmp" "$sums" && mkdir -p "$tmp" "$MODEL_ROOT/$1"
  if ! aws s3 cp --only-show-errors "$source/$COMPLETE/$2.sha256" "$sums" 2>"$AWS_ERRORS"; then
    log_failure "model $1: cannot download the manifest $source/$COMPLETE/$2.sha256"
    return 1
  fi
  if ! aws s3 cp --only-show-errors --recursive "$source/$2/" "$tmp/" 2>"$AWS_ERRORS"; then
    log_failure "model $1: cannot download version $2 from $source/$2/"
    rm -rf "$tmp" "$sums"
    return 1
  fi
  if ! (cd "$tmp" && sha256sum --check --quiet --strict "$sums"); then
    log "model $1: version $2 does not match its manifest; not made live"
    rm -rf "$tmp" "$sums"
    return 1
  fi
  mv "$tmp" "$dest"
  rm -f "$sums"
  log "model $1: version $2 is live"
}

sync_model() {  # model policy arg
  local wanted v dir
  # shellcheck disable=SC2310  # inside $(...) set -e is off anyway: failures are returned
  wanted="$(wanted_versions "$@")" || return 1
  if [ -z "$wanted" ]; then
    # An empty answer never empties a serving model: keep what is loaded.
    log "model $1: no complete version wanted in S3; keeping local versions"
    return 0
  fi
  for v in $wanted; do fetch "$1" "$v"; done
  for dir in "$MODEL_ROOT/$1"/*/; do
    [ -d "$dir" ] || continue
    v="$(basename "$dir")"
    if ! printf '%s\n' "$wanted" | grep -qx "$v"; then
      mv "$dir" "$STAGING/retired-$1-$v" && rm -rf "$STAGING/retired-$1-$v"
      log "model $1: version $v retired"
    fi
  done
}

mkdir -p "$STAGING"
trap 'rm -f "$AWS_ERRORS"' EXIT
case "${1:-}" in
  --model)
    shift
    # Every configured model's base path exists from the first pass, published or not: TF
    # Serving polls all models in one pass and a missing base path fails that pass for
    # every model (tensorflow/serving file_system_storage_path_source.cc,
    # PollFileSystemForConfig), so one unpublished model would keep the others unloaded.
    mkdir -p "$MODEL_ROOT/$1"
    sync_model "$@"  # called plainly, so that `set -e` holds inside it
    exit 0
    ;;
  --once)  # [retry seconds]: the sidecar's pass, whose failure line says when it retries
    # A pass killed with its pod (no EXIT trap ran) may have left its error files behind.
    rm -f "$STAGING"/aws-errors.*
    failed=""
    while read -r model policy arg; do
      [ -n "$model" ] || continue
      bash "$0" --model "$model" "$policy" "$arg" < /dev/null || failed="$failed $model"
    done < "$MODELS_FILE"
    if [ -n "$failed" ]; then
      if [ -n "${2:-}" ]; then
        log "sync pass failed for:$failed (they keep the versions they had); next try in ${2}s"
      else
        log "sync failed for:$failed (they keep the versions they had)"
      fi
      exit 1
    fi
    exit 0
    ;;
esac
while true; do
  bash "$0" --once "$INTERVAL" || true  # a failed pass has said so, in one line
  sleep "$INTERVAL"
done
