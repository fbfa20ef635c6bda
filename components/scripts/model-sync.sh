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
# With $MODEL_CACHE set (a directory every serving pod on the node mounts: the node-local
# model cache, components/model_cache.py), a version is first looked up there and, when
# missing, filled into it by the same protocol (staging inside the cache, checksums, atomic
# rename to $MODEL_CACHE/<model>/<version>); the pod then copies it from the cache into its
# own volume and checks the copy against the manifest before the rename into place. So the
# node downloads a version once, whatever number of pods serve it, and a pod's versions never
# depend on the cache keeping them. The cache is an optimisation: a version it cannot hold
# (full disk, nothing evictable, not writable) comes straight from S3 as without it.
#
#   Concurrency: pods on a node take a per-version fill lock, a directory made with mkdir
#   (atomic), holding the owner and refreshed by a heartbeat while its holder lives; a lock
#   not refreshed for $LOCK_STALE_SECONDS is stale (its holder was killed) and is taken
#   over. flock(1) is not used: the sync image adds only less, groff and jq to the
#   amazonlinux:2 base (aws/aws-cli docker/Dockerfile), which does not promise util-linux.
#   Correctness never rests on the lock: every filler stages in its own folder and renames
#   with `mv -T` (rename(2) onto an existing non-empty folder fails), so two fillers at
#   once (a lock wrongly taken over) cost a second download, never a mixed version.
#   Eviction: the cache is held under $MODEL_CACHE_MAX_KIB (and the disk's free space) by
#   removing versions least recently used first (last fill, copy or lease refresh), never one
#   a pod leases: each pod touches $MODEL_CACHE/.pins/<model>/<version>/<pod> for every
#   version it holds or is fetching, every pass; a lease not refreshed for
#   $PIN_STALE_SECONDS (the pod is gone) no longer counts.
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
CACHE="${MODEL_CACHE:-}"
CACHE_MAX_KIB="${MODEL_CACHE_MAX_KIB:-0}"
POD="${POD_NAME:-$HOSTNAME}"
# A lease outlives a few missed passes (a slow pass, a sidecar restart), not a deleted pod.
PIN_STALE="${PIN_STALE_SECONDS:-$((INTERVAL * 4))}"
LOCK_STALE="${LOCK_STALE_SECONDS:-60}"
HEARTBEAT=$((LOCK_STALE / 4 > 0 ? LOCK_STALE / 4 : 1))

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

fetch() {  # model version: into the pod's volume, through the node cache when there is one
  local rc=0
  [ -d "$MODEL_ROOT/$1/$2" ] && return 0
  if [ -n "$CACHE" ]; then
    pin "$1" "$2"
    # shellcheck disable=SC2310  # its failures are returned and told apart here
    fill_cache "$1" "$2" || rc=$?
    # shellcheck disable=SC2310
    if [ "$rc" = 0 ] && place_from_cache "$1" "$2"; then return 0; fi
    # S3 refused (1): a direct download would fail alike. The cache could not help (2): direct.
    [ "$rc" = 1 ] && return 1
  fi
  fetch_from_s3 "$1" "$2"
}

fetch_from_s3() {  # model version: straight into the pod's volume
  local dest="$MODEL_ROOT/$1/$2" tmp="$STAGING/$1-$2" sums="$STAGING/$1-$2.sha256"
  local source="s3://$MODEL_BUCKET/$MODEL_PREFIX/$1"
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

# --- the node cache (only with $MODEL_CACHE) ---------------------------------------------

age() {  # file: seconds since it was last changed; -1 when it is gone
  local t now
  t="$(stat -c %Y "$1" 2>/dev/null)" || t=""
  printf -v now '%(%s)T' -1  # bash >= 4.2: no `date` process
  if [ -n "$t" ]; then echo $(( now - t )); else echo -1; fi
}

pin() {  # model version: this pod's lease on it (and a use, for LRU)
  if ! { mkdir -p "$CACHE/.pins/$1/$2" "$CACHE/.used/$1" && touch "$CACHE/.pins/$1/$2/$POD" "$CACHE/.used/$1/$2"; } 2>/dev/null; then
    log "model $1: cannot lease version $2 in the node cache $CACHE"
  fi
}

pinned() {  # model version: true while some pod's lease on it is fresh
  local f a
  for f in "$CACHE/.pins/$1/$2"/*; do
    [ -f "$f" ] || continue
    a="$(age "$f")"
    if [ "$a" -ge 0 ] && [ "$a" -lt "$PIN_STALE" ]; then return 0; fi
  done
  return 1
}

declare -A HEARTBEATS=()
take_lock() {  # lock-dir [path]: 0 once held; 1 as soon as path exists (no need); 2 cannot lock
  local a owner absent=0
  mkdir -p "${1%/*}" 2>/dev/null || true
  while ! mkdir "$1" 2>/dev/null; do
    if [ -n "${2:-}" ] && [ -e "$2" ]; then return 1; fi
    # Not made, yet not there (a few times: a holder may release it in between): read-only.
    if [ ! -e "$1" ]; then
      absent=$((absent + 1))
      [ "$absent" -lt 3 ] || return 2
      continue
    fi
    a="$(age "$1")"
    if [ "$a" -ge "$LOCK_STALE" ]; then
      owner="$(cat "$1/owner" 2>/dev/null)" || owner="?"
      log "node cache: lock ${1#"$CACHE/.locks/"} of $owner not refreshed for ${a}s; taking it over"
      mv -T "$1" "$1.stale.$$" 2>/dev/null && rm -rf "$1.stale.$$"
      continue
    fi
    sleep 1
  done
  echo "$POD $$" > "$1/owner"
  # Refreshed while this process lives: killed (-9, OOM, pod deleted), the lock goes stale.
  # `touch -c` never re-creates a lock that was released.
  ( while kill -0 $$ 2>/dev/null; do touch -c "$1"; sleep "$HEARTBEAT"; done ) >/dev/null 2>&1 &
  HEARTBEATS[$1]=$!
}

release_lock() {  # lock-dir
  local beat="${HEARTBEATS[$1]:-}"
  if [ -n "$beat" ]; then
    kill "$beat" 2>/dev/null || true
    wait "$beat" 2>/dev/null || true
    unset "HEARTBEATS[$1]"
  fi
  rm -rf "$1"
}

disk_full() { grep -qE 'No space left on device|Errno 28' "$AWS_ERRORS"; }

kib_of_listing() {  # sizes in bytes, one a line: the KiB they take on disk (4 KiB blocks)
  local size total=0
  while read -r size; do
    [[ "$size" =~ ^[0-9]+$ ]] || continue
    total=$(( total + ((size + 4095) / 4096) * 4 + 4 ))
  done
  echo $(( total + 4 ))
}

cache_used_kib() {  # du fails when files vanish under it (another pod evicting): its sum stands
  local kib
  kib="$(du -sk "$CACHE" 2>/dev/null | cut -f1)" || true
  [[ "$kib" =~ ^[0-9]+$ ]] && echo "$kib"
}
cache_free_kib() {
  local kib
  kib="$(df -Pk "$CACHE" | tail -n 1 | tr -s ' ' | cut -d' ' -f4)" || true
  [[ "$kib" =~ ^[0-9]+$ ]] && echo "$kib"
}

lru_unpinned() {  # "<last use> <model> <version>" of every cached version no pod leases, oldest first
  local dir m v used
  for dir in "$CACHE"/*/*/; do
    [ -d "$dir" ] || continue
    v="$(basename "$dir")" && m="$(basename "$(dirname "$dir")")"
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || continue
    # shellcheck disable=SC2310
    pinned "$m" "$v" && continue
    used="$(stat -c %Y "$CACHE/.used/$m/$v" 2>/dev/null)" || used=0
    echo "$used $m $v"
  done | sort -n
}

evict() {  # model version why
  local gone="$CACHE/.staging/evicted-$1-$2.$$"
  mv -T "$CACHE/$1/$2" "$gone" 2>/dev/null || return 0  # someone else evicted it
  rm -rf "$gone" "$CACHE/$1/$2.sha256" "$CACHE/.used/$1/$2"
  log "node cache: model $1 version $2 evicted ($3)"
}

make_room() {  # KiB: evict unleased versions, least recently used first, until KiB more fit
  local need="$1" used free oldest when m v now
  # shellcheck disable=SC2310  # a lock it cannot take: no room made, said by the caller
  take_lock "$CACHE/.locks/.evict" || return 1
  while :; do
    # Callers test make_room, so set -e is off here: each result is checked.
    # shellcheck disable=SC2311
    used="$(cache_used_kib)"
    # shellcheck disable=SC2311
    free="$(cache_free_kib)"
    if [ -z "$used" ] || [ -z "$free" ]; then
      release_lock "$CACHE/.locks/.evict"
      return 1
    fi
    if [ $(( used + need )) -le "$CACHE_MAX_KIB" ] && [ "$need" -le "$free" ]; then
      release_lock "$CACHE/.locks/.evict"
      return 0
    fi
    # shellcheck disable=SC2311
    oldest="$(lru_unpinned | head -n 1)"
    if [ -z "$oldest" ]; then
      release_lock "$CACHE/.locks/.evict"
      return 1
    fi
    read -r when m v <<< "$oldest"
    printf -v now '%(%s)T' -1
    evict "$m" "$v" "least recently used, leased by no pod; last used $(( now - when ))s ago"
  done
}

fill_cache() {  # model version: 0 it is in the cache; 1 S3 failed (logged); 2 the cache cannot take it (logged)
  local entry="$CACHE/$1/$2" lock="$CACHE/.locks/$1/$2" rc=0
  [ -d "$entry" ] && return 0
  if ! mkdir -p "$CACHE/$1" "$CACHE/.locks/$1" "$CACHE/.staging/$1" 2>"$AWS_ERRORS"; then
    log_failure "model $1: the node cache $CACHE is not writable; version $2 comes straight from S3"
    return 2
  fi
  # shellcheck disable=SC2310  # 1: another pod filled it meanwhile
  take_lock "$lock" "$entry" || rc=$?
  if [ "$rc" = 1 ]; then return 0; fi
  if [ "$rc" != 0 ]; then
    log "model $1: cannot lock version $2 in the node cache $CACHE; it comes straight from S3"
    return 2
  fi
  if [ ! -d "$entry" ]; then
    # shellcheck disable=SC2310
    fill_locked "$1" "$2" "$CACHE/.staging/$1/$2.$POD" || rc=$?
  fi
  release_lock "$lock"
  return "$rc"
}

fill_locked() {  # model version staging: download, check and rename into the cache
  local tmp="$3" sizes need source="s3://$MODEL_BUCKET/$MODEL_PREFIX/$1"
  rm -rf "$tmp" "$tmp.sha256"
  if ! sizes="$(aws s3api list-objects-v2 --bucket "$MODEL_BUCKET" --prefix "$MODEL_PREFIX/$1/$2/" \
      --query 'Contents[].[Size]' --output text 2>"$AWS_ERRORS")"; then
    log_failure "model $1: cannot list version $2 at $source/$2/"
    return 1
  fi
  need="$(printf '%s\n' "$sizes" | kib_of_listing)"
  # shellcheck disable=SC2310  # a full cache is an answer, not an error
  if ! make_room "$need"; then
    log "model $1: version $2 (${need} KiB) does not fit in the node cache (bound ${CACHE_MAX_KIB} KiB; the versions in it are leased or the disk is full); it comes straight from S3"
    return 2
  fi
  mkdir -p "$tmp"
  if ! aws s3 cp --only-show-errors "$source/$COMPLETE/$2.sha256" "$tmp.sha256" 2>"$AWS_ERRORS" \
      || ! aws s3 cp --only-show-errors --recursive "$source/$2/" "$tmp/" 2>"$AWS_ERRORS"; then
    rm -rf "$tmp" "$tmp.sha256"
    # shellcheck disable=SC2310
    if disk_full; then
      log_failure "model $1: the node cache's disk filled while version $2 was copied in; it comes straight from S3"
      return 2
    fi
    log_failure "model $1: cannot download version $2 from $source/$2/"
    return 1
  fi
  if ! (cd "$tmp" && sha256sum --check --quiet --strict "$tmp.sha256"); then
    log "model $1: version $2 does not match its manifest; not made live"
    rm -rf "$tmp" "$tmp.sha256"
    return 1
  fi
  # The manifest first: a version in the cache always has it beside it.
  if ! mv -T "$tmp.sha256" "$CACHE/$1/$2.sha256" || ! mv -T "$tmp" "$CACHE/$1/$2"; then
    rm -rf "$tmp" "$tmp.sha256"
    [ -d "$CACHE/$1/$2" ] && return 0  # another filler's rename won: the same checked bytes
    log "model $1: cannot rename version $2 into the node cache; it comes straight from S3"
    return 2
  fi
  mkdir -p "$CACHE/.used/$1" && touch "$CACHE/.used/$1/$2"
  log "model $1: version $2 is in the node cache"
}

place_from_cache() {  # model version: copy from the cache into the pod's volume, checked
  local entry="$CACHE/$1/$2" tmp="$STAGING/$1-$2" sums="$STAGING/$1-$2.sha256"
  rm -rf "$tmp" "$sums" && mkdir -p "$MODEL_ROOT/$1"
  touch -c "$CACHE/.used/$1/$2"
  # A copy, not a link: the pod volume and the cache are different mounts (link(2) fails
  # with EXDEV across mounts even on one filesystem), and a pod's served files must not
  # depend on the cache keeping them.
  if ! cp "$entry.sha256" "$sums" 2>/dev/null || ! cp -R "$entry" "$tmp" 2>/dev/null; then
    rm -rf "$tmp" "$sums"
    log "model $1: version $2 left the node cache while it was copied; it comes straight from S3"
    return 1
  fi
  if ! (cd "$tmp" && sha256sum --check --quiet --strict "$sums"); then
    rm -rf "$tmp" "$sums"
    evict "$1" "$2" "its files no longer match the manifest"
    log "model $1: the node cache's version $2 does not match its manifest; it comes straight from S3"
    return 1
  fi
  mv "$tmp" "$MODEL_ROOT/$1/$2"
  rm -f "$sums"
  log "model $1: version $2 is live (from the node cache)"
}

cache_upkeep() {  # once a pass: leftovers of killed fillers, stale leases, the size bound
  local dir m v a lock
  for dir in "$CACHE"/.staging/evicted-*; do
    # An eviction renames first, then deletes: what an evictor killed in between left.
    [ -e "$dir" ] || continue
    a="$(age "$dir")"
    if [ "$a" -ge "$LOCK_STALE" ]; then rm -rf "$dir"; fi
  done
  for dir in "$CACHE"/.staging/*/*; do
    [ -e "$dir" ] || continue
    case "$dir" in "$CACHE"/.staging/evicted-*) continue ;; esac
    m="$(basename "$(dirname "$dir")")" && v="$(basename "$dir")" && v="${v%%.*}"
    lock="$CACHE/.locks/$m/$v"
    # Staging exists only while its lock is held and refreshed: else its filler is dead.
    a="$(age "$lock")"
    if [ "$a" -lt 0 ] || [ "$a" -ge "$LOCK_STALE" ]; then rm -rf "$dir"; fi
  done
  for dir in "$CACHE"/.pins/*/*/*; do
    [ -f "$dir" ] || continue
    a="$(age "$dir")"
    if [ "$a" -ge "$PIN_STALE" ]; then rm -f "$dir"; fi
  done
  # shellcheck disable=SC2310
  make_room 0 || log "node cache: above ${CACHE_MAX_KIB} KiB, but every version in it is leased"
}

sync_model() {  # model policy arg
  local wanted v dir
  if [ -n "$CACHE" ]; then
    # Leases first: whatever the listing does, what this pod serves stays in the cache.
    for v in $(local_versions "$1"); do pin "$1" "$v"; done
  fi
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
      [ -z "$CACHE" ] || rm -f "$CACHE/.pins/$1/$v/$POD"
      log "model $1: version $v retired"
    fi
  done
}

mkdir -p "$STAGING"
trap 'rm -f "$AWS_ERRORS"' EXIT
case "${1:-}" in
  --cache-upkeep)
    cache_upkeep
    exit 0
    ;;
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
    if [ -n "$CACHE" ]; then bash "$0" --cache-upkeep < /dev/null || log "node cache: upkeep failed"; fi
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
