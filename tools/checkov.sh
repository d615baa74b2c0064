#!/usr/bin/env bash
# Run checkov over each built kustomize overlay. checkov lives in its own venv because its pinned
# dependencies conflict with ctloop's; the venv is created on first use.
#
#   tools/checkov.sh [overlay ...]      (default: every folder under k8s/overlays)
#   CHECKOV_VENV=...  CHECKOV_OUT=dir   (where <overlay>.yaml and <overlay>.json go; default a temp dir)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CHECKOV_VENV:-$HOME/.cache/ctloop/checkov-venv}"
out="${CHECKOV_OUT:-$(mktemp -d)}"
mkdir -p "$out"

# Exit status: 0 all checks pass or are suppressed, 1 a check failed, 2 a build failed,
# 3 checkov could not be installed (no package index reachable), 4 checkov produced no report or
# scanned nothing.
if [[ ! -x "$venv/bin/checkov" ]]; then
  { python3 -m venv "$venv" && "$venv/bin/python" -m pip install --quiet checkov; } >&2 || {
    rm -rf "$venv"; echo "could not install checkov into $venv" >&2; exit 3; }
fi

build() {
  if command -v kubectl >/dev/null; then kubectl kustomize "$1"
  elif command -v kustomize >/dev/null; then kustomize build "$1"
  else echo "neither kubectl nor kustomize on PATH" >&2; exit 2
  fi
}

if [[ $# -eq 0 ]]; then
  set -- "$root"/k8s/overlays/*/
fi

status=0
for overlay in "$@"; do
  name="$(basename "$overlay")"
  build "$overlay" > "$out/$name.all.yaml" || { echo "kustomize build of $overlay failed" >&2; exit 2; }
  # checkov has no policies for Argo's kinds, and its YAML loader gives up on the whole file at
  # a Sensor's bare `comparator: =`: scan the core kinds (tests/k8s validates the Argo ones).
  "$venv/bin/python" -c 'import re, sys
docs = re.split(r"(?m)^---\n", sys.stdin.read())
sys.stdout.write("---\n".join(d for d in docs if not re.search(r"(?m)^apiVersion: argoproj\.io/", d)))' \
    < "$out/$name.all.yaml" > "$out/$name.yaml"
  # Severities come from Prisma Cloud's API, which needs an account and network: --skip-download
  # runs offline, so every failed check counts. checkov exits 1 on a failure; report every overlay.
  "$venv/bin/checkov" --skip-download --framework kubernetes -f "$out/$name.yaml" \
    --output json --output-file-path "$out" >/dev/null 2>"$out/$name.stderr" || status=1
  [[ -f "$out/results_json.json" ]] || { cat "$out/$name.stderr" >&2; echo "checkov wrote no report" >&2; exit 4; }
  mv "$out/results_json.json" "$out/$name.json"
  "$venv/bin/python" - "$name" "$out/$name.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
report = json.load(open(path))
# With nothing parsed, checkov writes only the summary.
results, summary = report.get("results", {}), report.get("summary", report)
print(f"{name}: {summary['resource_count']} resources, passed {summary['passed']}, failed {summary['failed']}, "
      f"suppressed {summary['skipped']}")
for check in results.get("failed_checks", []):
    print(f"  FAILED     {check['check_id']} {check['resource']}: {check['check_name']}")
for check in results.get("skipped_checks", []):
    print(f"  suppressed {check['check_id']} {check['resource']}: {check['check_result'].get('suppress_comment', '')}")
sys.exit(4 if summary["resource_count"] == 0 else 0)
PY
done
exit $status
