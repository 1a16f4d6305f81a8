"""The code location: assembles the Definitions that `dagster dev -w workspace.yaml` loads."""

import dagster as dg

from stock_platform.ingestion import definitions as ingestion
from stock_platform.orchestration import definitions as orchestration
from stock_platform.transform import definitions as transform

defs = dg.Definitions.merge(ingestion.defs, transform.defs, orchestration.defs)
