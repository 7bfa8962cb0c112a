"""Reading problem data from local files (JSONL, Parquet, datasets folders). No torch here."""

from prorl.data.loaders import Location, RowProblem, load_rows
from prorl.data.reward_fn import call_reward_fn, load_reward_fn
from prorl.data.schema import Record, Router, RowError, normalize_row

__all__ = [
    "Location",
    "Record",
    "Router",
    "RowError",
    "RowProblem",
    "call_reward_fn",
    "load_reward_fn",
    "load_rows",
    "normalize_row",
]
