"""Django's PostgreSQL backend with plain multi-row bulk inserts, for the local Label Studio (``ls_settings``)."""
