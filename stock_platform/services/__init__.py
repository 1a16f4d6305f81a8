"""Dev and test tooling, left out of the production image: the local services (Kafka, the S3 server,
fakesnow) and what the tests and the benchmarks share to drive the platform (a headless-Chromium driver,
the dashboard launcher, raw-table rows and a seeded gold warehouse), so benchmarks never import the tests.
"""
