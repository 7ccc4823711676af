"""ClickHouse: client factory, versioned migrations and queries."""
