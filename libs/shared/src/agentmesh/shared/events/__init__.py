"""Events: envelope, versioned contracts, streams, transactional outbox and idempotent inbox."""
