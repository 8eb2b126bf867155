"""Safety gates between a strategy's intent and a venue: kill switch, circuit breaker,
compliance and limits. May import only ``bastion.model`` and ``bastion.engine``."""
