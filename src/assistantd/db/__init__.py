"""The database layer: the engine and sessions (``engine``), the tables (``models``), the
migrations (``migrate``) and the Core writes of mapped objects that bypass the ORM's unit of
work on the hot paths (``rows``).

Performance shortcuts that lean on SQLAlchemy's behaviour live here and nowhere else, behind the
names below, and tests/test_db_shortcuts.py pins what they rely on.
"""

from assistantd.db.engine import Database, inline_sync_engine
from assistantd.db.models import Base
from assistantd.db.rows import insert_objects, mark_loaded, update_object, update_object_where, update_returning

__all__ = ["Base", "Database", "inline_sync_engine", "insert_objects", "mark_loaded", "update_object", "update_object_where",
           "update_returning"]
