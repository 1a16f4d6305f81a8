"""The live dashboard of the gold tables (Streamlit + Vega-Lite), on DuckDB and on Snowflake.

- ``gold_reader``: the data-access layer, the only code that reads gold, with one set of queries for both
  warehouses;
- ``snapshot``: on DuckDB, a read-only copy of gold published after each gold build, which is what the
  dashboard reads (a DuckDB file has one writer and no readers beside it);
- ``health``: the pipeline's own health (newest gold minute, consumer lag, dead letters);
- ``figures``: the charts (Vega-Lite specs) and cards, pure functions of the reader's frames;
- ``app``: the Streamlit page; ``cli``: ``stock-platform dashboard``.
"""
