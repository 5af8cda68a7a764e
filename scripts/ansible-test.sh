#!/usr/bin/env bash
# Run ansible-test on this checkout. ansible-test needs the collection at .../ansible_collections/hanzo/kms with its
# dependencies beside it, so build that tree in a temp dir from the files git would ship (tracked + untracked not
# ignored), link kubernetes.core and amazon.aws from the pinned ansible package, and run there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
tree=$(mktemp -d "${TMPDIR:-/tmp}/hanzo-kms-ansible-test.XXXXXX")
trap 'rm -rf "$tree"' EXIT
dest="$tree/ansible_collections/hanzo/kms"
mkdir -p "$dest"
# --ignore-failed-read: a tracked file deleted in the working tree is simply absent from the copy.
(cd "$root" && git ls-files -z --cached --others --exclude-standard \
  | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$dest"
site=$("$venv/bin/python" -c 'import ansible_collections, os; print(os.path.dirname(ansible_collections.__path__[0]))')
for dep in kubernetes/core amazon/aws; do
  mkdir -p "$tree/ansible_collections/${dep%/*}"
  ln -s "$site/ansible_collections/$dep" "$tree/ansible_collections/$dep"
done
# ansible-test bootstraps pip in its venvs with get-pip from a host this machine cannot reach; the stdlib's
# ensurepip does the same offline (see ansible/ansible#77304). One file per pip version ansible-test pins.
mkdir -p "$HOME/.ansible/test/cache"
for pip_version in 24_2 25_2; do
  cat > "$HOME/.ansible/test/cache/get_pip_${pip_version}.py" <<'PY'
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", "--upgrade"] + args)
PY
done
cd "$dest"
PATH="$venv/bin:$PATH" ansible-test "$@"
