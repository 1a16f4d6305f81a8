"""I/O resources: Kafka, the object store, the warehouse."""
