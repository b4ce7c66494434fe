"""deliveries: room in each page for a row's next version (PostgreSQL's fillfactor 50)

A claim leases a delivery (lease_owner, lease_expires_at: columns no index
reads) and its outcome ends it. PostgreSQL writes an updated row as a new
version; when that version fits in the row's own page and no indexed column
changed, the update is HOT (heap-only): no index gets an entry for it, and
the old version is pruned within the page. With pages filled to the brim
by the inserts (the default fillfactor, 100), most leases found no room:
in a 30,000-event saturation run 5,462 of 56,076 updates were HOT, and each
of the others added an entry to every index on deliveries (eight), dead at
the next update. Filled to half, almost every lease is HOT (24,100 of
55,637: nearly all of the 26,000 leases), and the table came out no larger
(12 MB against 14), since pruning reuses the room the dead versions leave.

ALTER TABLE ... SET (fillfactor) takes a lock that blocks no read and no
write (SHARE UPDATE EXCLUSIVE) and rewrites nothing: pages written from now
on keep the room. SQLite has no such setting: nothing to do there.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FILLFACTOR = 50


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute(f"ALTER TABLE deliveries SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("ALTER TABLE deliveries RESET (fillfactor)")
