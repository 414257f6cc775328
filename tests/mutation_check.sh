#!/usr/bin/env bash
# Mutation check of issue 20: apply each mutation, run the tests that must catch it, restore.
#
#   tests/mutation_check.sh            # all five (a..e), ~10 min on 2 cores
#   tests/mutation_check.sh b c        # a subset
#
# Each mutation edits tracked files only and is restored with `git checkout -- <files>` (also on
# Ctrl-C). A mutation "is caught" when pytest exits non-zero; the failing test ids are printed.
# Needs ../shared/data (registration known answers). Run from the repository root, clean tree.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_HOME=$PWD/.cache/prefect \
       NUMBA_CACHE_DIR=$PWD/.cache/numba MPLBACKEND=Agg OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if ! git diff --quiet -- medvol flows models kernels; then
  echo "mutation_check: uncommitted changes in medvol/ flows/ models/ kernels/ — refusing" >&2; exit 2
fi
TOUCHED=()
restore() { [ ${#TOUCHED[@]} -gt 0 ] && git checkout -- "${TOUCHED[@]}"; TOUCHED=(); }
trap restore EXIT INT TERM

# replace FIRST occurrence of $2 by $3 in file $1; fail loudly if the anchor moved (refactor)
patch_py() {
  "$PY" - "$@" <<'PYEOF' || { echo "mutation anchor not found in $1 — update tests/mutation_check.sh" >&2; exit 3; }
import sys
path, old, new = sys.argv[1:4]
s = open(path).read()
if old not in s:
    sys.exit(1)
open(path, "w").write(s.replace(old, new, 1))
PYEOF
  TOUCHED+=("$1")
}

run_tests() {  # $1 = mutation id, rest = pytest args
  local id=$1; shift
  local log=".cache/mutation_$id.log"
  mkdir -p .cache
  "$PY" -m pytest -q -p no:cacheprovider -rfE "$@" >"$log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "[$id] CAUGHT (pytest rc=$rc); failing tests:"
    grep -E "^(FAILED|ERROR) " "$log" | sed 's/ - .*//' | sed 's/^/    /'
  else
    echo "[$id] NOT CAUGHT — all selected tests passed (log: $log)"
  fi
}

mut_a() {  # a registration net returning a zero field
  patch_py medvol/registration/learned.py 'return out["ddf"][0].cpu().numpy(),' \
                                          'return 0 * out["ddf"][0].cpu().numpy(),'
  run_tests a tests/registration/test_known_answers.py -k "learned"
  restore
}
mut_b() {  # PD-UNet weights replaced by LPD's
  cp models/weights/lpd_ct_x16.safetensors models/weights/pdunet_ct_x16.safetensors
  cp models/weights/lpd_mri_x16.safetensors models/weights/pdunet_mri_x16.safetensors
  TOUCHED+=(models/weights/pdunet_ct_x16.safetensors models/weights/pdunet_mri_x16.safetensors)
  run_tests b tests/models/test_shipped_quality.py
  restore
}
mut_c() {  # a report/output that writes PatientID (into the whitelisted "description" metadata)
  patch_py medvol/io/dicom/meta.py '    meta["label"] = series_label(' \
           '    meta["description"] = str(ds.get("PatientID", ""))
    meta["label"] = series_label('
  run_tests c tests/test_phi.py tests/commands/test_ingest.py
  restore
}
mut_d() {  # an ImportError raised inside medvol.flows
  patch_py flows/tasks.py 'from __future__ import annotations' \
           'from __future__ import annotations
raise ImportError("mutation d: broken import inside medvol.flows")'
  run_tests d1 tests/flows/test_tasks.py
  run_tests d2 --maxfail=2 tests/flows/test_pipeline.py::test_watch_inbox_flow_processes_drop_once \
               tests/test_phi.py::test_run_pipeline_and_watch_folder_write_no_phi
  restore
}
mut_e() {  # B-spline returning the identity
  patch_py medvol/registration/classical.py \
    '    return transform_to_field(bspline_transform(fixed, moving, metric=metric, mesh=mesh, seed=seed), fixed)' \
    '    return 0 * transform_to_field(bspline_transform(fixed, moving, metric=metric, mesh=mesh, seed=seed), fixed)'
  run_tests e tests/registration/test_known_answers.py -k "bspline"
  restore
}

for m in "${@:-a b c d e}"; do
  for x in $m; do "mut_$x"; done
done
git diff --quiet -- medvol flows models kernels || { echo "restore failed!" >&2; exit 4; }
