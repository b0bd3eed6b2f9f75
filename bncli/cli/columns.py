"""The statistics a table shows, by column label: shared by the table (``report``) and the
command line's ``--sort`` choices, without importing rich for a run that prints JSON."""

from __future__ import annotations

# (label, statistic) of the table's columns; quantile columns go after "max".
TABLE_COLUMNS = (("count", "count"), ("mean", "mean"), ("std", "std"), ("min", "min"),
                 ("max", "max"), ("nan", "nan_count"), ("inf", "inf_count"))
SORT_KEYS = {label: key for label, key in TABLE_COLUMNS}
