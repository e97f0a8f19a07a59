#!/usr/bin/env bash
# Mutation testing of the core logic with mutmut (pinned in requirements.txt). Not run in CI: about 23 minutes
# for every target on a quiet 2-core machine; docs/testing.md records the scores and each target's time.
#
# Usage: scripts/mutation.sh [NAME ...]        (default: every target below)
#        MUTATION_LANES=1 MUTATION_JOBS=2 scripts/mutation.sh flops   (targets at once; test workers per target)
#
# Each target mutates one module (or some of its functions) and runs only the tests that cover it:
# mutmut maps every test of the target's selection to the functions it reaches, then runs, per
# mutant, just the tests that reach the mutated function. Each target works in its own folder,
# .mutation/NAME/ (a fresh copy of tlcore, tests and data every time), which keeps mutmut's results:
#   cd .mutation/NAME && ../../.venv/bin/python -m mutmut browse     # look at the survivors
# The summary lands in .mutation/scores.txt, the survivors' diffs in .mutation/NAME/survivors.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python

# One line per target:  name | module file[:function,Class.method,Class.*] | focused tests (pytest arguments)
#                        [| modules its tests import lazily, loaded once in the fork server]
# Longest first: two lanes finish together.
# Adding a module is one line here (e.g. the run verdicts: `quality | tlcore/quality.py | tests/test_quality.py`).
TARGETS=$(cat <<'EOF'
ranking    | tlcore/methods/ranking/scores.py | tests/test_ranking_scores.py
splits     | tlcore/data/splits.py | tests/test_split_files.py tests/test_data.py tests/test_seed_fidelity.py::test_a_dataset_name_reads_the_images_the_csvs_list_even_a_torchvision_name tests/test_seed_fidelity.py::test_a_csv_path_that_exists_nowhere_is_one_sentence tests/test_seed_fidelity.py::test_validation_folders_are_the_val_partition -k "(split or csv or partition or overlap or samples_per_class_larger) and not cli" | mlflow
evidence   | tlcore/guidelines/evidence.py:_usable_points,configuration_of,gather_evidence,spc_grid_for_pilot,same_task_family | tests/test_evidence_frames.py tests/test_evidence.py::test_variant_labels_name_their_configuration tests/test_guidelines.py tests/test_guideline_boundaries.py tests/test_guideline_texts.py
recommend  | tlcore/guidelines/recommend.py | tests/test_guidelines.py tests/test_guideline_boundaries.py tests/test_guideline_texts.py tests/test_evidence_frames.py tests/test_evidence.py -k "not calibration and not this_machine"
quanta     | tlcore/models/quanta_layer.py | tests/test_quanta_layer.py tests/test_quanta.py -k "not run and not resume and not export and not cli and not command_line and not pretrained and not bad_input and not show_only and not augmented and not random_source and not metric_set and not same_seed"
pareto     | tlcore/results/tradeoffs.py:pareto_mask,pareto_front,tradeoff_points,learning_curves,find_crossings,crossovers,cost_ratio | tests/test_tradeoff_analyses.py tests/test_results.py -k "keeps_ties or single_point or per_dataset or average_repeated or find_crossings or only_over_the_range or trade_off_points or front_is_sorted or equal_cost or curve_statistics or crossings_in or crossovers_pair or cost_ratio_is"
fitpoint   | tlcore/methods/feature_extraction.py:fit_point | tests/test_fit_point.py
flops      | tlcore/measure/flops.py | tests/test_flops_by_hand.py tests/test_measure.py -k "not cost_meter and not energy_off and not carbon"
fne        | tlcore/features/fne.py | tests/test_fit_point.py tests/test_feature_extraction.py::test_training_statistics_are_applied_to_test_and_constant_features_become_zero tests/test_feature_extraction.py::test_discretisation_thresholds_are_strict_and_configurable tests/test_feature_extraction.py::test_per_set_statistics_reproduce_the_seed tests/test_feature_extraction.py::test_crop_statistics_pool_every_crop_of_the_training_set
costs      | tlcore/guidelines/projection.py:gpu_speed,project_costs,Projection.option,fits_budget,_watts | tests/test_guidelines.py tests/test_guideline_boundaries.py tests/test_guideline_texts.py tests/test_evidence_frames.py
voting     | tlcore/classifiers/voting.py | tests/test_fine_tuning_outcomes.py tests/test_feature_extraction.py tests/test_fine_tuning.py -k "(vote_by or voted or tied) and not precomputed"
scoring    | tlcore/methods/common.py:score_metrics | tests/test_fine_tuning_outcomes.py tests/test_feature_extraction.py tests/test_fine_tuning.py -k "(scores_are or scored_balanced or missing_from_training) and not precomputed"
guidelines | tlcore/guidelines/rules.py | tests/test_guidelines.py tests/test_guideline_boundaries.py tests/test_guideline_texts.py
EOF
)

# Two targets at a time, one test worker each: a target spends its first ~30 s (mutant generation, mutmut's
# stats, clean and forced-fail runs) on one core, so two lanes keep both cores busy where one target with two
# workers left one idle. MUTATION_LANES=1 MUTATION_JOBS=2 runs the targets one after the other instead.
LANES=${MUTATION_LANES:-2}
JOBS=${MUTATION_JOBS:-1}
mkdir -p .mutation

run_target() {  # name spec tests preload: one target in .mutation/NAME; its score line in .mutation/NAME/score.txt
  local name=$1 spec=$2 tests=$3 preload=$4
  local file=${spec%%:*} funcs="" module globs=() test_args=()
  [[ "$spec" == *:* ]] && funcs=${spec#*:}
  eval "test_args=($tests)"
  module=${file%.py}
  module=${module//\//.}
  if [ -z "$funcs" ]; then
    globs=("$module.*")
  else
    for f in ${funcs//,/ }; do
      if [[ "$f" == *.* ]]; then globs+=("$module.xǁ${f%%.*}ǁ${f#*.}__mutmut_*"); else globs+=("$module.x_${f}__mutmut_*"); fi
    done
  fi

  local dir=.mutation/$name
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -a tlcore tests data "$dir"/
  find "$dir" -name __pycache__ -prune -exec rm -rf {} +
  # Heavy modules the code under test imports lazily (scipy.stats alone is ~500 modules): imported here, in the
  # copy's conftest, mutmut's fork server loads them once when it collects the tests, instead of every mutant's
  # process loading them again (measured: most of a mutant's time on the evidence and splits targets). A
  # target's own extra modules (the fourth column) only where its tests need them: each is paid again by
  # mutmut's three set-up runs.
  {
    echo
    echo
    echo "import PIL.PngImagePlugin  # noqa: E402, F401  (scripts/mutation.sh: loaded once in the fork server)"
    for m in scipy.stats skimage.data sklearn.datasets sklearn.linear_model sklearn.svm $preload; do
      echo "import $m  # noqa: E402, F401"
    done
  } >> "$dir/tests/conftest.py"
  {
    cat pyproject.toml
    echo
    echo "[tool.mutmut]"
    echo 'source_paths = ["tlcore"]'
    echo "only_mutate = [\"$file\"]"
    echo 'also_copy = ["data"]'
    echo "pytest_add_cli_args_test_selection = $("$PY" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${test_args[@]}")"
    # --tb=no: a killed mutant's failure report parsed the whole mutated file (every mutant of the module,
    # 18,000 lines for splits) once per traceback entry, 3 of a mutant's 4 s; unraisableexception's two full
    # garbage collections at every session's end (torch loaded) took another 0.6 s. mutmut reads exit codes only.
    echo 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:unraisableexception", "--tb=no", "-m", "not browser"]'
    echo 'process_isolation = "forkserver"'
  } > "$dir/pyproject.toml"

  local start=$SECONDS
  echo "== $name: $spec (started $(date +%H:%M:%S))"
  # one thread per test worker: the workers run side by side on a small machine; the tests' empty MLflow store
  # is created once per target instead of once per mutant's pytest session
  if ! (cd "$dir" && TLCORE_TEST_STORE_TEMPLATE=$ROOT/$dir/store-template.db OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
        "$PY" -m mutmut run --max-children "$JOBS" "${globs[@]}" > mutmut.log 2>&1); then
    echo "mutmut failed for $name; see $dir/mutmut.log" >&2
    tail -20 "$dir/mutmut.log" >&2
    return 1
  fi
  (cd "$dir" && "$PY" "$ROOT/scripts/mutation_score.py" "$name" "${globs[@]}") > "$dir/score.txt"
  echo "$(cat "$dir/score.txt")   ($((SECONDS - start)) s; survivors in $dir/survivors.txt)"
}

wanted=" $* "
names=()
failed=0
while IFS='|' read -r name spec tests preload; do
  name=$(echo "$name" | xargs)
  [ -z "$name" ] && continue
  if [ $# -gt 0 ] && [[ "$wanted" != *" $name "* ]]; then continue; fi
  names+=("$name")
  while [ "$(jobs -rp | wc -l)" -ge "$LANES" ]; do wait -n || failed=1; done
  run_target "$name" "$(echo "$spec" | xargs)" "$tests" "$(echo "${preload:-}" | xargs)" < /dev/null &
done <<< "$TARGETS"
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done
[ "$failed" = 0 ] || { echo "some targets failed (above)" >&2; exit 1; }

for name in "${names[@]}"; do cat ".mutation/$name/score.txt"; done > .mutation/scores.txt
echo
cat .mutation/scores.txt
