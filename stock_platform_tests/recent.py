"""Past dates inside the minute partitions' moving window, for tests that materialize partitions.

The window starts UTC midnight HISTORY_SUCCESS_DAYS (default 3) before today (stock_platform/partitions.py),
so a fixed date falls out of it within days and its partition key is refused. Yesterday is inside it and past.
"""

import datetime as dt

YESTERDAY = dt.datetime.combine(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1), dt.time(), dt.UTC)
