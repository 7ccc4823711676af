"""HTTP ingestion: routes, validation, enrichment and the Kafka producer."""
