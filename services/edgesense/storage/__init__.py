"""Database plumbing shared by the registry and delivery: engines, the SQLite
writer thread, migrations, and database errors as `Unavailable`."""
