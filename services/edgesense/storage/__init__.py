"""The one place that talks to the database: engines, migrations, error mapping."""
