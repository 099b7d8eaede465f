# Sourced by the other scripts: make sure .venv exists and holds this project with its
# development extras, reinstalling only when pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ensure_venv DIR TAG PIP_ARGS...: a virtualenv in DIR with PIP_ARGS installed, redone only
# when TAG changes; on failure prints pip's log and exits.
ensure_venv() {
    local dir="$1" tag="$2"
    shift 2
    local stamp="$dir/.installed-$tag"
    [ -f "$stamp" ] && return 0
    echo "setting up $dir (once) ..." >&2
    python3 -m venv "$dir"
    local log="$dir/install.log"
    if ! "$dir/bin/python" -m pip install --disable-pip-version-check "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "pip install $* failed; see above" >&2
        exit 1
    fi
    rm -f "$dir"/.installed-*
    touch "$stamp"
}

venv="$root/.venv"
ensure_venv "$venv" "$(sha256sum "$root/pyproject.toml" | cut -c1-16)" -e "$root[dev]"
export PATH="$venv/bin:$PATH"
cd "$root"
