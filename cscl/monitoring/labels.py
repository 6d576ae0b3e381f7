"""Labels that arrive after the predictions (pathology review, outcomes), joined to a window.

Target drift compares the labels of the window's requests with the training labels stored in the
reference set; labels come later than the requests, so they are a separate file joined by id.
"""

from __future__ import annotations

import pandas as pd

from cscl.errors import InputError
from cscl.io.labels import normalise_labels
from cscl.io.manifest import read_table
from cscl.monitoring.logs import LogWindow
from cscl.monitoring.schema import LABEL_PREFIX

ID_COLUMNS = ("request_id", "slide_id")


def load_window_labels(labels_uri: str, window: LogWindow) -> pd.DataFrame:
    """Labels joined to the window's rows by `request_id` or `slide_id`.

    The file (CSV/Parquet, local or s3://) has one of those id columns and one column per task;
    the result has a `label__<task>` column per task aligned with the window (None = not
    labelled yet).
    """
    df = read_table(labels_uri)
    key = next((k for k in ID_COLUMNS if k in df.columns), None)
    if key is None:
        raise InputError(
            f"labels {labels_uri} have neither a request_id nor a slide_id column",
            hint="add the id of the logged request (request_id) or slide (slide_id)",
        )
    df, _ = normalise_labels(df, f"labels {labels_uri}", id_column=key)  # as training labels
    tasks = [c for c in df.columns if c not in {*ID_COLUMNS, "case_id", "split"}]
    df = df.drop_duplicates(key, keep="last").set_index(df[key].astype(str).rename(None))
    ids = window.request_ids if key == "request_id" else window.slide_ids
    out = pd.DataFrame(index=range(len(ids)))
    for t in tasks:
        col = df[t].reindex(ids)
        out[f"{LABEL_PREFIX}{t}"] = [None if pd.isna(v) else str(v) for v in col]
    return out
