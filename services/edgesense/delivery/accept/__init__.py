"""Accept: events from Publish streams become stored deliveries, matched
against the webhook index and group-committed."""
