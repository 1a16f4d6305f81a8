"""The code location: assembles the Definitions that `dagster dev -w workspace.yaml` loads."""

import dagster as dg

from stock_platform.ingestion.definitions import defs as ingestion_defs
from stock_platform.transform.definitions import defs as transform_defs

defs = dg.Definitions.merge(ingestion_defs, transform_defs)
