"""Tracking in MLflow: which store (ssgan.tracking.store), what a run records (ssgan.tracking.logger), how it
reaches the store without training waiting on it (ssgan.tracking.spool: a local journal, a background sender,
`ssgan sync`) and the one tracked-run path (ssgan.tracking.run) behind `ssgan train`, `--seeds` and
`--members` (ssgan.tracking.ensemble)."""
from ssgan.tracking.ensemble import run_ensemble
from ssgan.tracking.logger import RunLogger, run_name
from ssgan.tracking.run import record, run_training, run_training_seeds, track
from ssgan.tracking.spool import Journal, Sender, sync_folder, unsent
from ssgan.tracking.store import resolve_uri, use_store

__all__ = ["run_training", "run_training_seeds", "run_ensemble", "track", "record", "RunLogger",
           "run_name", "resolve_uri", "use_store", "Journal", "Sender", "sync_folder", "unsent"]
