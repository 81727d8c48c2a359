"""The tracking contract's names (roles, tags, statuses, metrics, artifacts), shared by every writer and
reader of a run so that none can drift. Imports nothing: the report reads it without torch or mlflow."""

from __future__ import annotations

# --- roles (tag ROLE) ---------------------------------------------------------------------------
ROLE = "role"
TUNE = "tune"  # a tuning trial of a cell, on the validation split
FINAL = "final"  # a cell's chosen configuration on one final seed: the only runs whose test/acc is reported
STUDY = "study"  # the study's parent run
SCREEN = "screen"  # a zero-training screen of one backbone
BUDGET_CHECK = "budget_check"  # a tuned configuration re-run with a larger step budget ("trained enough?")
EXPORT = "export"  # the recommended arm retrained on train + validation and logged as a model

# --- tags ---------------------------------------------------------------------------------------
STATUS = "status"  # a trial's status: COMPLETED | PRUNED | "failed: <reason>"
STRATEGY_TAG = "strategy"
N_PER_CLASS_TAG = "n_per_class"
DEVICE = "device"
DEVICE_COUNT = "device_count"
CELL = "cell"
TRIAL_NUMBER = "trial_number"
OPTUNA_STUDY = "optuna_study"
TUNED_FROM = "tuned_from_trial"
TUNED_IN = "tuned_in_cell"  # a final whose configuration was tuned at another data size (budget.tune_at)
COLLAPSED = "collapsed"  # "true" on a trial whose result is degenerate (see COLLAPSED_PREFIX)
COLLAPSE_REASON = "collapse_reason"
RACE_ROUND = "race_round"  # a final run: the racing round (1, 2, ...) it was run in
BUDGET_FACTOR = "budget_factor"  # a budget check: its step budget over the checked run's ("2")
BASE_RUN_ID = "base_run_id"  # a budget check: the run whose budget it multiplies
SCREEN_KEPT = "screen_kept"  # a screen run inside a study: "true" (trained) | "false" (dropped)
SCREEN_REASON = "screen_reason"
DEVICE_HOURS_RULE = "device_hours_rule"  # how cost/device_hours was computed on this device
OVERRIDES = "overrides"  # a sweep trial's run: its Hydra overrides as a JSON list (what re-runs it)
FEATURE_CACHE = "feature_cache"  # whether the trial's prefix features came from the cache
STUDY_TAG = "tlbench.study"  # on a study's experiment: the study's name (what makes an experiment a study)
SWEEP_TAG = "tlbench.sweep"  # on a study's experiment: the sweep file's name
CANDIDATE_TAG = "tlbench.candidate"  # a parent-run candidate's election token (sweep/study.py)

# --- statuses (tag STATUS) ----------------------------------------------------------------------
COMPLETED = "completed"
PRUNED = "pruned"
FAILED_PREFIX = "failed: "
COLLAPSED_PREFIX = "failed: collapsed: "  # collapse is a failure, never a finding
RUNNING = "running"  # a study's parent run while its sweep runs
INTERRUPTED = "interrupted"  # a study's parent run after Ctrl-C

# --- metrics ------------------------------------------------------------------------------------
VAL_ACC = "val/acc"
TEST_ACC = "test/acc"
TRAIN_LOSS = "train/loss"
TRAIN_STEPS = "train/steps"  # optimizer steps actually run (early stopping may end a fit before its budget)
BEST_STEP = "train/best_step"  # the step whose weights were restored (best val/acc)
DEVICE_HOURS = "cost/device_hours"  # the trial's own compute: the same alone and on a loaded machine
FIT_SECONDS = "cost/fit_seconds"  # wall-clock seconds of the fit phase (moves with the machine's load)
FIT_CPU_SECONDS = "cost/fit_cpu_seconds"  # process CPU seconds of the fit phase
TRAIN_FLOPS = "cost/train_flops"
EVAL_FLOPS = "cost/eval_flops"
IMAGES_PER_SECOND = "cost/images_per_second"
PEAK_MEMORY_MB = "cost/peak_memory_mb"
PARAMS_TRAINABLE = "params/trainable"
PARAMS_TOTAL = "params/total"
BASE_VAL_ACC = "budget_check/base_val_acc"  # a budget check: the checked run's val/acc
VAL_LOSS = "val/loss"
TEST_LOSS = "test/loss"
COMPILE_SECONDS = "cost/compile_seconds"  # inside cost/fit_seconds, shown apart
STANDALONE_DEVICE_HOURS = "cost/standalone_device_hours"  # device-hours with reused feature extraction added
STANDALONE_TRAIN_FLOPS = "cost/standalone_train_flops"
TRAIN_SAMPLES = "cost/train_samples"
PROBE_L2 = "probe/l2"  # the converged probe's chosen L2 penalty

# --- artifacts ----------------------------------------------------------------------------------
CONFIG_ARTIFACT = "config.yaml"
PREDICTIONS_ARTIFACT = "predictions/test.json"  # per test image: label and predicted class, fixed order
RACE_ARTIFACT = "race.json"  # on the study's parent run: the racing finals, arm by arm
SWEEP_ARTIFACT = "sweep.yaml"  # on the study's parent run: the sweep definition it ran
REPORT_ARTIFACT_DIR = "report"  # on the study's parent run: the published report's files

# --- MLflow's own names tlbench sets --------------------------------------------------------------
# The experiment kind MLflow's UI offers for an experiment ("Model training", not "GenAI apps & agents").
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
PARENT_RUN_ID = "mlflow.parentRunId"  # a trial's run: its study's parent run
STUDY_VIEW_KEY = "tlbench"  # a study's shared view of MLflow's runs table (tracking/runs.py, STUDY_VIEW)
STUDY_VIEW_TAG = f"mlflow.sharedViewState.{STUDY_VIEW_KEY}"

# --- the winner (model registry) ------------------------------------------------------------------
CHAMPION_ALIAS = "champion"  # models:/<study>@champion: the study's recommended arm, retrained for use
MODEL_NAME = "model"  # the logged model's name inside its export run
VERDICT = "verdict"  # model version tags: the report's recommendation the model was exported from
VERDICT_INTERVAL = "verdict_interval"
RECOMMENDED_STRATEGY = "recommended_strategy"
EXPORT_N_PER_CLASS = "export_n_per_class"
TRAINED_ON = "trained_on"  # "train+validation"
FINAL_TEST_ACC_MEAN = "final_test_acc_mean"
FINAL_SEEDS = "final_seeds"
FINAL_RUN_IDS = "final_run_ids"
