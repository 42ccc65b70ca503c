"""Cloud providers: their configuration (sealed keys, published aliases) and the catalog inference reads."""
