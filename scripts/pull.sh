#!/usr/bin/env bash
# make pull EXP=<name>|all [CKPT=1]: copy experiments/<name>/ (grids, samples, plots, metrics, report, logs) from the
# cluster with rsync over ssh; checkpoints/<name>/ too only with CKPT=1. A sweep's name pulls its folder (comparison
# page) and every member's. Incremental and safe to repeat: nothing is
# deleted here, files already up to date are skipped, and it prints what it fetched.
#
# The remote is REMOTE=user@host:path/to/repo (a plain local path works too), from the environment or a git-ignored
# .env file next to the Makefile. Optional: REMOTE_EXPERIMENTS / REMOTE_CHECKPOINTS when the cluster moved those
# folders (DDPM_HPC_EXPERIMENTS / DDPM_HPC_CHECKPOINTS there): absolute, or relative to the remote repo; RSYNC_SSH
# (default "ssh") for extra ssh options. Locally, files land in $DDPM_HPC_EXPERIMENTS / $DDPM_HPC_CHECKPOINTS when
# set, else in this repo's experiments/ and checkpoints/.
#
# usage: scripts/pull.sh <name>|all [1]
set -uo pipefail

die() { echo "pull: error: $*" >&2; exit 2; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXP="${1:-${EXP:-}}"
CKPT="${2:-${CKPT:-}}"
ENV_FILE="${DDPM_HPC_ENV_FILE:-$REPO/.env}"

[ -n "$EXP" ] || die "no experiment given; usage: make pull EXP=<name>|all [CKPT=1]"
if [ "$EXP" != all ] && ! [[ "$EXP" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ && "$EXP" != *..* ]]; then
    die "invalid experiment name '$EXP' (letters, digits, '_', '-', '.')"
fi

# .env is read, not sourced: only KEY=value lines for the keys below, quotes stripped.
env_value() {
    [ -f "$ENV_FILE" ] || return 0
    sed -n "s/^[[:space:]]*\(export[[:space:]]\{1,\}\)\{0,1\}$1[[:space:]]*=[[:space:]]*//p" "$ENV_FILE" | tail -n 1 |
        sed -e 's/[[:space:]]*$//' -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"
}
for key in REMOTE REMOTE_EXPERIMENTS REMOTE_CHECKPOINTS RSYNC_SSH; do
    if [ -z "${!key:-}" ]; then
        printf -v "$key" '%s' "$(env_value "$key")"
    fi
done

[ -n "${REMOTE:-}" ] ||
    die "REMOTE is not set; put REMOTE=user@host:path/to/repo in $ENV_FILE (git-ignored) or the environment"
command -v rsync >/dev/null 2>&1 || die "rsync is not installed here (apt-get install rsync, brew install rsync, ...)"

# Split host:path (a colon before any slash means ssh, as rsync itself decides).
if [[ "$REMOTE" =~ ^[^/]*: ]]; then
    HOST="${REMOTE%%:*}:"
    RPATH="${REMOTE#*:}"
    SSH=(-e "${RSYNC_SSH:-ssh}")
else
    HOST=""
    RPATH="$REMOTE"
    SSH=()
fi
RPATH="${RPATH%/}"
[ -n "$RPATH" ] || RPATH="."
remote_dir() {  # remote_dir <override> <default subfolder>
    local dir="${1:-$2}"
    case "$dir" in /* | \~*) ;; *) dir="$RPATH/$dir" ;; esac
    printf '%s%s' "$HOST" "${dir%/}"
}
R_EXP="$(remote_dir "${REMOTE_EXPERIMENTS:-}" experiments)"
R_CKPT="$(remote_dir "${REMOTE_CHECKPOINTS:-}" checkpoints)"
L_EXP="${DDPM_HPC_EXPERIMENTS:-$REPO/experiments}"
L_CKPT="${DDPM_HPC_CHECKPOINTS:-$REPO/checkpoints}"

# -rlt: recurse, keep links and modification times (so the next run skips unchanged files); no owners or groups.
# Never copied: temporary files of atomic writers (".name.tmp-PID"), and submitit's job pickles and sbatch-script
# links (cluster internals). Nothing local is ever deleted.
OPTS=(-rlt --partial --itemize-changes --stats --human-readable --exclude='.*.tmp*' --exclude='*.pkl'
      --exclude='.submission_file_*' "${SSH[@]}")

first_line() { grep -v -e '^[[:space:]]*$' <<<"$1" | head -n 1; }

# is_there <src/>: whether the remote folder exists (rsync lists it without copying or creating anything); any other
# failure to read it (ssh, permissions) ends the pull in one line.
is_there() {
    local out
    out="$(LC_ALL=C rsync --list-only "${SSH[@]}" "$1" 2>&1 >/dev/null)" && return 0
    grep -q "No such file or directory" <<<"$out" && return 1
    die "cannot read $1: $(first_line "$out")"
}

total_files=0
fetch() {  # fetch <what> <src/> <dest/> [extra rsync args...]
    local what="$1" src="$2" dest="$3"
    shift 3
    local made=""
    [ -d "$dest" ] || made=1
    mkdir -p "$dest" || die "cannot create $dest"
    local out rc
    out="$(rsync "${OPTS[@]}" "$@" "$src" "$dest" 2>&1)"
    rc=$?
    if [ $rc -ne 0 ]; then
        [ -z "$made" ] || rmdir "$dest" 2>/dev/null  # a folder of our own that stayed empty
        die "rsync of $what from $src failed (exit $rc): $(first_line "$(grep -E '^(rsync|ssh)|error' <<<"$out")")"
    fi
    # Itemized lines: ">f+++++++++ path" new file, ">f.st...... path" changed file; directories are not news.
    local files n bytes
    files="$(echo "$out" | grep -E '^>f' || true)"
    n="$(echo "$out" | sed -n 's/^Number of regular files transferred: *//p' | tr -d ',')"
    bytes="$(echo "$out" | sed -n 's/^Total transferred file size: *//p')"
    if [ -n "$files" ]; then
        echo "$files" | sed -e 's/^>f+++++++++ /  new      /' -e 's/^>f[^ ]* /  updated  /'
    fi
    echo "pull: $what: ${n:-0} file(s) fetched (${bytes:-0 bytes}) from $src into $dest"
    total_files=$((total_files + ${n:-0}))
}

has_checkpoints() {  # has_checkpoints <src/>: true if the remote has them, else says so
    is_there "$1" && return 0
    echo "pull: no checkpoints on the remote yet ($1 does not exist)"
    return 1
}

# The remote folder is checked first, so that a wrong name or REMOTE creates no local folder (an empty one would be
# listed as an experiment that has not started).
is_there "$R_EXP/" || die "no $R_EXP/ on the remote: is REMOTE (or REMOTE_EXPERIMENTS) right?"
if [ "$EXP" = all ]; then
    # every experiment folder; not the YAML files or the top-level index (local copies stay as they are)
    fetch "experiments" "$R_EXP/" "$L_EXP/" --include='/*/' --exclude='/*'
    if [ "$CKPT" = 1 ] && has_checkpoints "$R_CKPT/"; then
        fetch "checkpoints" "$R_CKPT/" "$L_CKPT/" --exclude='/*.old-*' --include='/*/' --exclude='/*'
    fi
else
    is_there "$R_EXP/$EXP/" || die "no experiment '$EXP' on the remote ($R_EXP/$EXP/ does not exist)"
    fetch "experiments/$EXP" "$R_EXP/$EXP/" "$L_EXP/$EXP/"
    NAMES=("$EXP")
    if [ -f "$L_EXP/$EXP/sweep.json" ]; then
        # a sweep (make sweep): its folder holds the comparison page and the array logs; then every member. The
        # member names are the "name" fields of sweep.json (names are [A-Za-z0-9_.-], see ddpm_hpc/paths.py).
        mapfile -t MEMBERS < <(grep -o '"name": *"[A-Za-z0-9_.-]*"' "$L_EXP/$EXP/sweep.json" | sed 's/.*"\([^"]*\)"$/\1/')
        echo "pull: sweep $EXP: ${#MEMBERS[@]} member(s)"
        for member in "${MEMBERS[@]}"; do
            if is_there "$R_EXP/$member/"; then
                fetch "experiments/$member" "$R_EXP/$member/" "$L_EXP/$member/"
            else
                echo "pull: $member: not on the remote yet"
            fi
        done
        NAMES=("${MEMBERS[@]}")
    fi
    if [ "$CKPT" = 1 ]; then
        for name in "${NAMES[@]}"; do
            if has_checkpoints "$R_CKPT/$name/"; then
                fetch "checkpoints/$name" "$R_CKPT/$name/" "$L_CKPT/$name/"
            fi
        done
    fi
fi
[ "$CKPT" = 1 ] || echo "pull: checkpoints not copied (add CKPT=1 to copy them)"
if [ "$total_files" -eq 0 ]; then
    echo "pull: already up to date"
fi

# Refresh the local list of experiments (experiments/index.html) so it includes what was just pulled.
PY="${PYTHON_BIN:-$REPO/.venv/bin/python}"
if [ -x "$PY" ]; then
    "$PY" -c 'from ddpm_hpc.report import render_index; print("pull: wrote", render_index())' 2>/dev/null ||
        echo "pull: note: could not refresh $L_EXP/index.html (ddpm-hpc report all does it)"
fi
if [ "$EXP" = all ]; then
    echo "pull: open $L_EXP/index.html"
else
    echo "pull: open $L_EXP/$EXP/index.html"
fi
