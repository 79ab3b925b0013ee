"""Training recipes for the lab models jaxprune ships (not library code: each builds one specific model)."""
