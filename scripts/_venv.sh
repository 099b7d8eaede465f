# Sourced by the other scripts: make sure .venv exists and holds this project with its
# development extras, reinstalling only when pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "setting up $venv (once) ..." >&2
    python3 -m venv "$venv"
    log="$venv/install.log"
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[dev]" >"$log" 2>&1; then
        cat "$log" >&2
        echo "pip install failed; see above" >&2
        exit 1
    fi
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$root"
